"""A loop that keeps up with the records behind the linkages: the chainer's and the collector's.

Each runs in its keeper's worker process: one pass at once (``run_once``), then one every
``interval`` while the worker runs; the database away, it says so (the error's kind only: a
message could carry a record's values) and tries again at its next turn; leaving, it makes one
pass more, so what still waits is taken at the next start at the latest.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Self

_log = logging.getLogger(__name__)


class Behind:
    """Runs :meth:`run_once` every ``interval`` seconds while used as an async context manager."""

    def __init__(self, name: str, interval: float) -> None:
        self._name = name  # names the loop in the log and the asyncio task, never a record
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Any:
        raise NotImplementedError

    async def _pass(self) -> None:
        try:
            await self.run_once()
        except Exception as e:  # the database away, or a bad row: keep trying, say so
            _log.warning("%s failed: %s", self._name, type(e).__name__)

    async def _loop(self) -> None:
        while True:
            await self._pass()
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop(), name=self._name)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._pass()  # leaving: what still waits is taken at the next start
