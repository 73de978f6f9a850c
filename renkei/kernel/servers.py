"""Where the servers of a running ``renkei up`` are: its state file in the data folder.

``renkei up`` writes ``stack.json`` (its pid and the Temporal and PostgreSQL addresses) while it
runs; every other process (a worker, ``renkei records`` …) reads it to join the same servers when
``RENKEI_TEMPORAL_ADDRESS`` / ``RENKEI_DATABASE_URL`` are not set.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

STATE_FILE = "stack.json"


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def write_state(data_dir: Path, temporal_address: str, database_url: str) -> None:
    (data_dir / STATE_FILE).write_text(
        json.dumps({"pid": os.getpid(), "temporal": temporal_address, "database": database_url})
    )


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
