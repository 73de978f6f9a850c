"""The chainer: one party's loop that links the records written unchained into its chain."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

import asyncpg

from renkei.kernel.records._chain import RecordSigner, chain_pending

_log = logging.getLogger(__name__)

# How often a running chainer looks for unchained records: well within the second in which a
# citizen must see a record chained, and few enough queries to cost nothing when idle.
CHAIN_INTERVAL = 0.2


class Chainer:
    """Links the records written unchained into ``signer``'s own chain, while it runs.

    Runs in the keeper's own worker process, as the keeper: the hub's worker chains the hub's
    chain; an org's worker chains the org's (the only one that holds its key). Use as an async
    context manager around the worker; leaving it links what is still waiting, once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: RecordSigner,
        *,
        interval: float = CHAIN_INTERVAL,
        batch: int = 5000,
    ) -> None:
        self._pool = pool
        self._signer = signer
        self._interval = interval
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Link every record waiting now, in batches (one transaction each); return how many."""
        total = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                linked = await chain_pending(conn, self._signer, limit=self._batch)
            total += linked
            if linked < self._batch:
                return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as e:  # the database away, or a bad row: keep trying, say so
                # Only the error's kind: a message could carry a record's values.
                _log.warning(
                    "chaining %s's records failed: %s", self._signer.party, type(e).__name__
                )
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> Chainer:
        self._task = asyncio.create_task(self._loop(), name=f"chainer {self._signer.party}")
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
        try:
            await self.run_once()
        except Exception as e:  # leaving: what still waits is linked at the next start
            _log.warning("chaining %s's records failed: %s", self._signer.party, type(e).__name__)
