"""The collector: the hub's loop that records ``provided`` from the providers' own receipts.

A provider's gate keeps its receipt of an answer (with the hub's permit it answered) before the
answer leaves; the database queues each such receipt for collection. The collector, in the hub's
worker process and on the platform's database role, takes a batch of the queue every
:data:`COLLECT_INTERVAL`, checks each receipt as the hub checks one a flow forwards (the permit is
the hub's, for this very attempt, to this provider; signed with the provider's registered key,
not revoked at the database's time; its own gate's record of the attempt admitted it) and
records ``provided`` with the receipt, in one transaction per batch that also empties the batch
from the queue. A receipt that does not hold
is recorded as nothing at all (a hostile provider cannot take the place of the executor's own
outcome with a bad row): it is counted and logged, without its attempt or any content.
"""

from __future__ import annotations

import logging

import asyncpg
from pydantic import BaseModel, ValidationError

from renkei.kernel.permits import AnswerReceipt
from renkei.kernel.records._behind import Behind
from renkei.kernel.records._chain import HUB, Conn, RecordSigner
from renkei.kernel.records._outcomes import collect_outcomes
from renkei.kernel.records._receipts import _permit

_log = logging.getLogger(__name__)

# How often a running collector looks for new receipts: an outcome appears well within a
# second of the answer, and an idle look is one query on an empty queue.
COLLECT_INTERVAL = 0.2


class Collected(BaseModel):
    """What one pass of the collector did with the receipts it took."""

    provided: int = 0  # recorded as provided now
    known: int = 0  # the attempt had its outcome already (its flow told it, or told another)
    refused: int = 0  # a receipt that does not hold: nothing recorded
    unknown: int = 0  # no record of the hub's for its attempt (a scan's own, say)

    def __add__(self, other: Collected) -> Collected:
        return Collected(
            provided=self.provided + other.provided,
            known=self.known + other.known,
            refused=self.refused + other.refused,
            unknown=self.unknown + other.unknown,
        )

    @property
    def taken(self) -> int:
        return self.provided + self.known + self.refused + self.unknown


def _receipt(row: asyncpg.Record) -> AnswerReceipt | str:
    """The receipt a queued row holds, or why it is none the hub can check."""
    try:
        permit = _permit(row["permit"])
        if permit is None:  # not queued without one; a row from elsewhere
            return "a receipt kept without the permit it answered"
        receipt = AnswerReceipt(
            permit=permit, digest=row["answer_digest"], signature=row["signature"]
        )
    except ValidationError:
        return "a receipt whose permit or signature the hub cannot read"
    if permit.signature != row["permit_signature"]:
        return "the receipt names another permit than the one kept with it"
    if permit.permit.provider != row["keeper"]:
        return "the receipt is kept by another org than the permit's provider"
    return receipt


async def collect_batch(conn: Conn, signer: RecordSigner, limit: int) -> Collected:
    """Take up to ``limit`` queued receipts and record what they hold, in ``conn``'s
    transaction (the caller's)."""
    rows = await conn.fetch(
        "SELECT q.receipt_id, r.keeper, r.attempt_key, r.answer_digest, r.permit_signature,"
        " r.signature, r.permit FROM records.receipts_to_collect q"
        " JOIN records.answer_receipts r ON r.id = q.receipt_id"
        " ORDER BY q.receipt_id LIMIT $1 FOR UPDATE OF q SKIP LOCKED",
        limit,
    )
    ids = [r["receipt_id"] for r in rows]
    if not ids:
        return Collected()
    done = Collected()
    checkable: list[tuple[str, AnswerReceipt]] = []
    keepers: list[str] = []
    for row in rows:
        found = _receipt(row)
        if isinstance(found, str):
            done.refused += 1
            _log.warning("a receipt of %s not collected: %s", row["keeper"], found)
        else:
            checkable.append((row["attempt_key"], found))
            keepers.append(row["keeper"])
    written: set[str] = set()
    results = await collect_outcomes(conn, checkable, signer, written)
    for (key, _), keeper, result in zip(checkable, keepers, results, strict=True):
        if isinstance(result, PermissionError):
            done.refused += 1
            _log.warning("a receipt of %s not collected: %s", keeper, result)
        elif result is None:
            done.unknown += 1
        elif key in written:
            written.discard(key)  # a second receipt of the same attempt found it recorded
            done.provided += 1
        else:
            done.known += 1
    # Rows still in the queue that did not come back (a receipt row gone past retention) go too.
    await conn.execute("DELETE FROM records.receipts_to_collect WHERE receipt_id = ANY($1)", ids)
    return done


class Collector(Behind):
    """Records ``provided`` from the providers' receipts, while it runs (the hub's only).

    Use as an async context manager around the hub's worker; leaving it collects what is still
    queued, once. The database away: it says so and tries again at its next turn.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: RecordSigner,
        *,
        interval: float = COLLECT_INTERVAL,
        batch: int = 500,
    ) -> None:
        if signer.party != HUB:
            raise PermissionError(f"{signer.party} does not collect receipts: the hub does")
        super().__init__("collecting the providers' receipts", interval)
        self._pool = pool
        self._signer = signer
        self._batch = batch
        self.total = Collected()  # since it started

    async def run_once(self) -> Collected:
        """Collect every receipt queued now, in batches (one transaction each)."""
        total = Collected()
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                done = await collect_batch(conn, self._signer, self._batch)
            total += done
            self.total += done
            if done.taken < self._batch:
                return total
