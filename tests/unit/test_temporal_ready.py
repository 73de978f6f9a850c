"""A Temporal server counts as started when it answers a call, not when its port opens."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from renkei.kernel.servers import port_open, temporal_answers


@pytest.fixture
def resetting_port() -> Iterator[int]:
    """A port that accepts connections and resets each at once, as a frontend still starting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def test_an_open_port_that_resets_is_not_a_started_server(resetting_port: int) -> None:
    assert port_open("127.0.0.1", resetting_port)
    assert not temporal_answers(f"127.0.0.1:{resetting_port}", timeout=2)


def test_a_closed_port_is_not_a_started_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert not temporal_answers(f"127.0.0.1:{free}", timeout=2)
