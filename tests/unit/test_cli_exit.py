"""A command lets go of the Temporal runtime before the interpreter exits, and Temporal's own
(core) log goes to a file, on the terminal only with ``--verbose``.

A Temporal runtime owns threads of its own; one still running while CPython finalizes aborts the
process after the command printed its result (``Fatal Python error: PyGILState_Release``).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio.runtime import Runtime

from renkei.app.cli.runtime import CORE_LOG_FILE, configure_logging, run_async
from renkei.kernel import telemetry
from renkei.kernel.settings import Settings, get_settings


def _threads() -> set[str]:
    """The process's threads, by id: the runtime's are those that came with it (the count
    would move with other tests' runtimes, collected meanwhile, when tests share a process)."""
    return set(os.listdir("/proc/self/task"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path / "data"))
    # this test's own runtimes (a runtime of the process, held by others, keeps its threads)
    monkeypatch.setattr(telemetry, "_runtimes", {})
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    telemetry.CORE_LOG.propagate = True
    for h in list(telemetry.CORE_LOG.handlers):
        telemetry.CORE_LOG.removeHandler(h)
        h.close()


def test_a_command_lets_go_of_the_runtime_and_its_threads(settings: Settings) -> None:
    seen: list[weakref.ref[Runtime]] = []

    started: set[str] = set()

    @run_async
    async def command() -> int:
        held = telemetry.runtime(settings)  # as every client of the command gets it
        seen.append(weakref.ref(held))
        started.update(_threads() - before)
        return 0

    before = _threads()
    with pytest.raises(typer.Exit) as done:
        command()
    assert done.value.exit_code == 0
    [runtime] = seen
    assert runtime() is None
    assert started  # the runtime's own threads
    assert not started & _threads()  # each of them ended with it


def test_a_failing_command_lets_go_of_it_too(settings: Settings) -> None:
    seen: list[weakref.ref[Runtime]] = []

    started: set[str] = set()

    @run_async
    async def command() -> None:
        held = telemetry.runtime(settings)
        seen.append(weakref.ref(held))
        started.update(_threads() - before)
        raise RuntimeError("the command failed")  # its frame, holding the runtime, is kept

    before = _threads()
    with pytest.raises(RuntimeError, match="the command failed"):
        command()
    [runtime] = seen
    assert runtime() is None
    assert started
    assert not started & _threads()


def test_the_core_log_reaches_python_logging_not_the_terminal(settings: Settings) -> None:
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    keep = Keep()
    telemetry.CORE_LOG.addHandler(keep)
    telemetry.CORE_LOG.setLevel(logging.INFO)
    try:
        runtime = Runtime(telemetry=telemetry.telemetry_config(settings, core_level="INFO"))
        runtime._core_runtime.write_test_info_log("core says hello", "")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        del runtime
    finally:
        telemetry.CORE_LOG.removeHandler(keep)
        telemetry.CORE_LOG.setLevel(logging.NOTSET)
    assert [r.getMessage() for r in got if "core says hello" in r.getMessage()]


def _core_warning(caplog: pytest.LogCaptureFixture) -> list[Any]:
    caplog.clear()
    telemetry.CORE_LOG.warning("Activity not found on completion")
    return [r for r in caplog.records if r.name == telemetry.CORE_LOG.name]


def test_the_core_log_is_written_to_a_file_and_shown_only_when_verbose(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    log = settings.data_dir / CORE_LOG_FILE
    configure_logging(settings, verbose=False)
    assert not log.exists()  # created at its first line only
    assert _core_warning(caplog) == []  # not on the terminal
    assert "Activity not found on completion" in log.read_text()
    configure_logging(settings, verbose=True)
    assert len(_core_warning(caplog)) == 1
    assert log.read_text().count("Activity not found on completion") == 2
    # configuring again adds no second file handler
    assert sum(isinstance(h, logging.FileHandler) for h in telemetry.CORE_LOG.handlers) == 1
