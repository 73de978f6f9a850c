"""The chainer: one party's loop that links the records written unchained into its chain."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from renkei.kernel.records._behind import Behind
from renkei.kernel.records._chain import RecordSigner, chain_pending

# How often a running chainer looks for unchained records: well within the second in which a
# citizen must see a record chained, and few enough queries to cost nothing when idle.
CHAIN_INTERVAL = 0.2

_log = logging.getLogger(__name__)


class Chainer(Behind):
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
        super().__init__(f"chaining {signer.party}'s records", interval)
        self._pool = pool
        self._signer = signer
        self._batch = batch

    async def run_once(self) -> int:
        """Link every record waiting now, in batches (one transaction each); return how many.

        A pass that finds nothing waiting costs one statement, outside any transaction and
        without the chain's lock (the writers' hot path takes neither, but the chainers of every
        party a process holds look five times a second); a record written just after it waits
        for the next pass."""
        if not await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM records.access_records WHERE keeper = $1"
            " AND chain_seq IS NULL)",
            self._signer.party,
        ):
            return 0
        return await self.link_waiting()

    async def link_waiting(self) -> int:
        """:meth:`run_once` without its first look."""
        total = 0
        while True:
            linked = await self.link_batch()
            total += linked
            if linked < self._batch:
                return total

    async def link_batch(self) -> int:
        """Link one batch of the records waiting, in one transaction; return how many (0 also
        when the chain's lock is held by another transaction: the next pass tries again)."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await chain_pending(conn, self._signer, limit=self._batch)


class Chainers(Behind):
    """The chainers of several parties run by one process (``renkei up``, an all-in-one
    deployment: the hub and the orgs whose keys it holds): one look per pass for all of them,
    then each links one batch of its own chain (:meth:`Chainer.link_batch`), in turn, so a party
    with a flood of records waiting takes its turn as the others do. A chain whose lock another
    transaction holds (the keeper's own database role holding it open, say) is skipped until a
    later pass, never waited for; a party whose linking fails (its row, its key) is logged and
    left for the next pass. Either way the others are linked."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        signers: Sequence[RecordSigner],
        *,
        interval: float = CHAIN_INTERVAL,
    ) -> None:
        super().__init__("chaining the records of this process's parties", interval)
        self._pool = pool
        self._chainers = {s.party: Chainer(pool, s, interval=interval) for s in signers}

    async def run_once(self) -> int:
        waiting = await self._pool.fetch(
            "SELECT k.keeper FROM unnest($1::text[]) AS k(keeper) WHERE EXISTS"
            " (SELECT 1 FROM records.access_records a WHERE a.keeper = k.keeper"
            " AND a.chain_seq IS NULL)",
            sorted(self._chainers),
        )
        total = 0
        for row in waiting:
            try:
                total += await self._chainers[row["keeper"]].link_batch()
            except Exception as e:  # its database row or its key: the others still go on
                _log.warning("chaining %s's records failed: %s", row["keeper"], type(e).__name__)
        return total
