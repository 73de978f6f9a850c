"""Where the servers of a running ``renkei up`` are: its state file in the data folder.

``renkei up`` writes ``stack.json`` (its pid, the Temporal and PostgreSQL addresses and the pids
of the servers it started) while it runs; every other process (a worker, ``renkei records`` …) reads it to join the same servers when
``RENKEI_TEMPORAL_ADDRESS`` / ``RENKEI_DATABASE_URL`` are not set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path

STATE_FILE = "stack.json"


def port_open(host: str, port: int) -> bool:
    """Whether something listens on ``host:port``: the connection is made, or made and reset at
    once (a server still starting can accept and reset before the connect returns; on a busy
    machine it does)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) in (0, errno.ECONNRESET)


def temporal_answers(address: str, timeout: float = 1.0) -> bool:
    """Whether the Temporal frontend at ``address`` answers a call (``GetSystemInfo``).

    Its port opens before the frontend serves: a client that connects then can have its first
    call reset. An empty request is a valid ``GetSystemInfoRequest``; any status but
    ``UNAVAILABLE`` means a server that reads calls."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/temporal.api.workflowservice.v1.WorkflowService/GetSystemInfo"
        )
        try:
            call(b"", timeout=timeout)
        except grpc.RpcError as e:
            return e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return True


def write_state(
    data_dir: Path,
    temporal_address: str,
    database_url: str,
    *,
    temporal_pid: int | None = None,
    postgres_pid: int | None = None,
) -> None:
    """Write the state file; the servers' own pids (when ``renkei up`` started them) change when
    it starts one again after a crash."""
    state: dict[str, object] = {
        "pid": os.getpid(),
        "temporal": temporal_address,
        "database": database_url,
    }
    if temporal_pid is not None:
        state["temporal_pid"] = temporal_pid
    if postgres_pid is not None:
        state["postgres_pid"] = postgres_pid
    path = data_dir / STATE_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(state))
    partial.replace(path)  # a reader never sees half a file


def clear_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def running_stack(data_dir: Path) -> dict[str, str] | None:
    """Addresses of a ``renkei up`` running on ``data_dir``, if one is."""
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    host, _, port = state["temporal"].rpartition(":")
    if not port_open(host, int(port)):
        return None
    return {"temporal": state["temporal"], "database": state["database"]}
