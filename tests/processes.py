"""renkei's own processes for the fault and load tests: workers started with ``renkei worker``.

A worker process joins the suite's servers through the same ``RENKEI_*`` variables an operator
sets. ``tests.fault_providers`` supplies providers that stop in the middle of a linkage, so a
test can kill the process at exactly that point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from renkei.kernel.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def renkei_env(settings: Settings, temporal: str, **extra: str) -> dict[str, str]:
    assert settings.database_url and settings.keys_file
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env.update(
        RENKEI_TEMPORAL_ADDRESS=temporal,
        RENKEI_DATABASE_URL=settings.database_url,
        RENKEI_KEYS_FILE=str(settings.keys_file),
        RENKEI_TASK_QUEUE_PREFIX=settings.task_queue_prefix,
        RENKEI_MODE=settings.mode,
        RENKEI_SAMPLE_RESIDENTS=str(settings.sample_residents),
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


def worker(settings: Settings, temporal: str, kind: str, *args: str, **extra: str) -> RenkeiProcess:
    """A started ``renkei worker KIND ARGS`` process, polling once this returns."""
    return RenkeiProcess(
        ["worker", kind, *args], renkei_env(settings, temporal, **extra), "polling"
    ).wait_ready()


def control_plane(
    settings: Settings, temporal: str, executors: tuple[str, ...] = ("city-minato",)
) -> list[RenkeiProcess]:
    """The hub's worker and the executors' control workers, each a process of its own."""
    return [worker(settings, temporal, "hub")] + [
        worker(settings, temporal, "control", org) for org in executors
    ]
