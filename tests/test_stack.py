"""``renkei up`` as an operator runs it: a real process on a fresh data folder, its servers
crashed under it (SIGKILL), stopped with Ctrl-C.

Each test starts its own ``renkei up`` (its own Temporal dev server on a SQLite file and its own
PostgreSQL), so nothing here touches the suite's shared servers. They start on the folder the
demo left (``first_run`` in tests/conftest.py): the costly first start of a fresh folder, which
takes every sample through the conformance kit, is the demo's, paid once in the suite; what they
prove (a stop, a crash and what follows) is the same on any folder ``renkei up`` starts on. Each
leaves the folder startable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from renkei.kernel.settings import Settings

from .conftest import FirstRun, own_stack_env
from .helpers import code, shibuya_family
from .processes import ROOT, RenkeiProcess, renkei_command

pytestmark = pytest.mark.faults

# Liveness bounds, not speed targets: a stop that hangs fails, a slow machine does not.
STOP_BOUND = 15.0


def _up(data: Path) -> RenkeiProcess:
    return RenkeiProcess(["up"], own_stack_env(data), "renkei is up").wait_ready(400)


def _state(data: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((data / "stack.json").read_text())
    return found


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _until_said(up: RenkeiProcess, words: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(words in line for line in up.lines):
        assert up.process.poll() is None, f"renkei up exited:\n{up.output}"
        assert time.monotonic() < deadline, f"renkei up did not say {words!r}:\n{up.output}"
        time.sleep(0.2)


def _a_flow_runs(data: Path, index: int) -> None:
    """``renkei start`` of a child-allowance check against the running stack, to its result:
    the stack's workers took it (they reconnected, when a server came back)."""
    settings = Settings(data_dir=data, keys_file=None, database_url=None, temporal_address=None)
    family = shibuya_family(settings, index)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env.update(RENKEI_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    done = renkei_command(
        *("start", "child-allowance-check"),
        *("--executor", "city-minato", "--case-ref", f"stack-{index}"),
        *("--subject", code(settings, "city-minato", family.members[0])),
        *("-i", "previous_municipality=city-shibuya"),
        env=env,
        timeout=180,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert '"outcome"' in done.stdout or "income above the limit" in done.stderr, done.stdout


@pytest.fixture
def data(first_run: FirstRun) -> Path:
    """The data folder the demo left (its stack stopped), on which ``renkei up`` starts."""
    return first_run.data


@contextlib.contextmanager
def _temporal_file_unusable(data: Path) -> Iterator[None]:
    """Temporal's database file made unusable (a folder in its place; a running server keeps
    its open file), put back once the block is over (the stack stopped by then), so the next
    ``renkei up`` on the folder starts."""
    sqlite, kept = data / "temporal.sqlite", data / "temporal.sqlite.kept"
    sqlite.rename(kept)
    sqlite.mkdir()
    try:
        yield
    finally:
        sqlite.rmdir()
        kept.rename(sqlite)


def test_ctrl_c_stops_renkei_up_and_its_servers_also_while_its_temporal_server_is_down(
    data: Path,
) -> None:
    """Ctrl-C stops a running stack and its servers. ``renkei up`` then starts again on the same
    data folder, and the issue's case follows: the Temporal server crashed and does not come
    back; Ctrl-C during the attempts to start it still stops everything within the bound,
    leaving no server behind."""
    up = _up(data)
    state = _state(data)
    try:
        up.process.send_signal(signal.SIGINT)
        up.process.wait(STOP_BOUND)
    finally:
        up.stop()
    assert up.process.returncode == 0, up.output
    assert _gone(state["temporal_pid"]) and _gone(state["postgres_pid"]), up.output
    assert not (data / "stack.json").exists()

    up = _up(data)
    state = _state(data)
    with _temporal_file_unusable(data):
        try:
            os.killpg(state["temporal_pid"], signal.SIGKILL)
            _until_said(up, "attempt 1 of 5")
            up.process.send_signal(signal.SIGINT)
            up.process.wait(STOP_BOUND)
        finally:
            up.stop()
    assert up.process.returncode == 0, up.output
    assert _gone(state["postgres_pid"]), up.output
    assert not any(
        "start-dev" in " ".join(p.info["cmdline"] or [])
        and str(data) in " ".join(p.info["cmdline"])
        for p in psutil.process_iter(["cmdline"])
    ), "a Temporal server of this stack is still running"
    assert not (data / "stack.json").exists()


def test_renkei_up_brings_crashed_servers_back_or_stops_with_a_reason(data: Path) -> None:
    up = _up(data)
    try:
        # Temporal crashes: started again on its SQLite file; the workers reconnect.
        first = _state(data)
        os.killpg(first["temporal_pid"], signal.SIGKILL)
        _until_said(up, "the Temporal server is running again")
        assert _state(data)["temporal_pid"] != first["temporal_pid"]
        _a_flow_runs(data, 0)

        # PostgreSQL crashes: started again after its crash recovery; the pools reconnect.
        os.kill(first["postgres_pid"], signal.SIGKILL)
        _until_said(up, "PostgreSQL is running again")
        _a_flow_runs(data, 1)

        # Temporal crashes and cannot start again (its database file is unusable): renkei up
        # tries a bounded number of times, then stops everything with the reason and exit 1.
        with _temporal_file_unusable(data):
            try:
                os.killpg(_state(data)["temporal_pid"], signal.SIGKILL)
                up.process.wait(120)
            finally:
                up.stop()
    finally:
        up.stop()
    assert up.process.returncode == 1, up.output
    said = (
        "error: the Temporal server stopped and did not start again after 5 attempts;"
        f" see the logs in {data}. renkei stopped."
    )
    deadline = time.monotonic() + 10  # the output's last lines may still be on their way
    while said not in up.lines and time.monotonic() < deadline:
        time.sleep(0.1)
    assert up.lines[-1] == said, up.output
    assert "Traceback" not in up.output, up.output  # each line says what happened, no more
    assert not (data / "stack.json").exists()
