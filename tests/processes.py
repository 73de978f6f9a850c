"""renkei's own processes for the fault and load tests: workers started with ``renkei worker``.

A worker process joins the suite's servers through the same ``RENKEI_*`` variables an operator
sets. ``tests.fault_providers`` supplies providers that stop in the middle of a linkage, so a
test can kill the process at exactly that point.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from renkei.app.stack import TemporalServer, postmaster_alive, start_postgres_again
from renkei.contracts.names import HUB
from renkei.kernel.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def renkei_command(
    *args: str, env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``renkei ARGS`` run to its end as a process of its own from the checkout, with ``env``
    (its exit code, stdout and stderr as text), or given up after ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "renkei.app.cli", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A local port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def direct_endpoints(*agencies: str) -> dict[str, str]:
    """A free local address for each agency's direct-channel endpoint, and the hub's."""
    return {org: f"127.0.0.1:{free_port()}" for org in (*agencies, HUB)}


def direct_env(endpoints: Mapping[str, str], kind: str, *args: str) -> dict[str, str]:
    """The direct channel's settings of a ``renkei worker KIND ARGS`` process, as an operator
    gives them: every process the transports (the hub's tells the flows to ask directly, and
    serves its endpoint), an
    agency the address its endpoint listens on, an executor's control process where every
    provider's endpoint is."""
    env = {"RENKEI_LINKAGE_TRANSPORT": "direct", "RENKEI_HUB_TRANSPORT": "direct"}
    if kind == "agency":
        env["RENKEI_LINKAGE_LISTEN"] = endpoints[args[0]]
    elif kind == "hub" and HUB in endpoints:
        env["RENKEI_LINKAGE_LISTEN"] = endpoints[HUB]
    elif kind == "control":
        env["RENKEI_LINKAGE_ENDPOINTS"] = json.dumps(dict(endpoints))
    return env


def wired(settings: Settings, *agencies: str) -> Settings:
    """``settings`` with a direct-channel endpoint of its own for each of ``agencies``: an
    agency's worker process started with them listens at its own, and every executor (a process
    or a worker set of the test's) asks there. Through the queues they change nothing."""
    return settings.model_copy(update={"linkage_endpoints": direct_endpoints(*agencies)})


def served_here(settings: Settings) -> Settings:
    """``settings`` with every sample agency's direct-channel endpoint at one address, where the
    test's own worker set serving them listens: for executors in processes of their own."""
    from activities.agencies import SAMPLE_AGENCIES

    address = f"127.0.0.1:{free_port()}"
    return settings.model_copy(
        update={
            "linkage_listen": address,
            "linkage_endpoints": dict.fromkeys(SAMPLE_AGENCIES, address),
        }
    )


def renkei_env(settings: Settings, temporal: str, **extra: str) -> dict[str, str]:
    """The environment of a renkei process joining the test's servers with ``settings``: its
    linkage transport too (the test's, not the default), and where the providers' endpoints
    are (:func:`wired`)."""
    assert settings.database_url and settings.keys_file
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env.update(
        RENKEI_TEMPORAL_ADDRESS=temporal,
        RENKEI_DATABASE_URL=settings.database_url,
        RENKEI_KEYS_FILE=str(settings.keys_file),
        RENKEI_TASK_QUEUE_PREFIX=settings.task_queue_prefix,
        RENKEI_MODE=settings.mode,
        RENKEI_SAMPLE_RESIDENTS=str(settings.sample_residents),
        RENKEI_RECORDS_CHAINING=settings.records_chaining,
        RENKEI_LINKAGE_TRANSPORT=settings.linkage_transport,
        RENKEI_HUB_TRANSPORT=settings.hub_transport,
        RENKEI_LINKAGE_ENDPOINTS=json.dumps(settings.linkage_endpoints),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)  # may replace any of the above (an org's own database login)
    return env


class RenkeiProcess:
    """``python -m renkei.app.cli ARGS`` in its own process group; output kept for failures."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str | None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "renkei.app.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._marker = ready
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if self._marker and self._marker in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 60) -> RenkeiProcess:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"renkei {' '.join(self.args)} did not start:\n" + self.output)
        return self

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill9(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the server, activities in flight are lost."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


def worker(
    settings: Settings, temporal: str, kind: str, *args: str, ready: bool = True, **extra: str
) -> RenkeiProcess:
    """A started ``renkei worker KIND ARGS`` process, polling once this returns (``ready=False``:
    as soon as it is started; :func:`all_ready` waits for several started together)."""
    if kind == "agency" and args and args[0] in settings.linkage_endpoints:
        # its direct-channel endpoint where the test's executors look for it (wired)
        extra.setdefault("RENKEI_LINKAGE_LISTEN", settings.linkage_endpoints[args[0]])
    elif kind == "hub" and HUB in settings.linkage_endpoints:  # the hub's, likewise
        extra.setdefault("RENKEI_LINKAGE_LISTEN", settings.linkage_endpoints[HUB])
    started = RenkeiProcess(
        ["worker", kind, *args], renkei_env(settings, temporal, **extra), "polling"
    )
    return started.wait_ready() if ready else started


def all_ready(procs: list[RenkeiProcess]) -> list[RenkeiProcess]:
    """``procs``, started together (their start-ups overlap), once every one polls; if one
    does not, all are stopped and the reason raised."""
    try:
        for p in procs:
            p.wait_ready()
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


def control_plane(
    settings: Settings,
    temporal: str,
    executors: tuple[str, ...] = ("city-minato",),
    *,
    ready: bool = True,
) -> list[RenkeiProcess]:
    """The hub's worker and the executors' control workers, each a process of its own, started
    together (``ready=False``: not waited for, to start with others under :func:`all_ready`):
    the hub's endpoint where the control workers look for it (an address of its own, unless
    ``settings`` give one)."""
    if HUB not in settings.linkage_endpoints:
        endpoints = {**settings.linkage_endpoints, HUB: f"127.0.0.1:{free_port()}"}
        settings = settings.model_copy(update={"linkage_endpoints": endpoints})
    started = [worker(settings, temporal, "hub", ready=False)] + [
        worker(settings, temporal, "control", org, ready=False) for org in executors
    ]
    return all_ready(started) if ready else started


def crash_temporal(server: TemporalServer) -> None:
    """SIGKILL of the Temporal dev server's process group: no shutdown, its SQLite file is left
    as the crash left it (the flows it stored stay, what it had not written is lost)."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def crash_postgres(server: object) -> int:
    """SIGKILL of an embedded PostgreSQL's postmaster (a crash, not ``pg_ctl stop``); returns its
    pid once it is dead. Its backends notice the postmaster is gone and exit on their own."""
    pid = server.get_pid()  # type: ignore[attr-defined]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while postmaster_alive(server):
        assert time.monotonic() < deadline, "the postmaster outlived SIGKILL"
        time.sleep(0.05)
    return pid


def restart_postgres(server: object, timeout: float = 60) -> None:
    """Start a crashed embedded PostgreSQL again, as ``renkei up`` does (crash recovery runs
    first), trying again while the dead server's backends still hold its shared memory."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            start_postgres_again(server)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
