"""The provider's own receipts: what it answered, kept under its own name.

When its gate hands back an answer it has signed, the provider keeps a receipt of it (the
attempt, the digest of the answer, the permit's signature it answered and its signature over
both: the very signature the answer carries) with the hub's permit, one per attempt,
append-only. The hub's outcomes say ``provided`` only on such a receipt: the hub collects it
from here (:class:`~renkei.kernel.records.Collector`; a flow from before forwarded it);
everything else in them is the executor's word. :func:`reconcile` sets the two side by side: an attempt the
provider answered whose outcome the executor reported as a failure, or never reported, shows
here (an executor hiding an exchange that took place), and so does a ``provided`` the hub holds
a receipt for while the provider's own record of it is missing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict

from renkei.kernel import attest
from renkei.kernel.permits import SignedPermit

if TYPE_CHECKING:
    from renkei.kernel.records._witness import PartyKey


class ProviderReceipt(BaseModel):
    """A provider's receipt of one attempt it answered."""

    model_config = ConfigDict(frozen=True)

    keeper: str  # the provider
    attempt_key: str
    answer_digest: str
    permit_signature: str
    signature: str
    answered_at: dt.datetime
    # The hub's permit it answered, kept with the receipt so that the hub collects "provided"
    # from it (receipts kept before have none, and are never collected).
    permit: SignedPermit | None = None


class Mismatch(BaseModel):
    """An attempt where the provider's receipts and the hub's outcomes disagree. No personal
    data: the attempt key names the workflow and the step."""

    model_config = ConfigDict(frozen=True)

    attempt_key: str
    provider: str
    requester: str
    reported: str  # the hub's outcome, as the executor reported it ("nothing": none)
    problem: str


def receipt_holds(
    ring: Mapping[str, PartyKey],
    keeper: str,
    permit_signature: str | None,
    digest: str | None,
    signature: str | None,
    stored_at: dt.datetime | None,
) -> bool:
    """Whether a kept receipt is ``keeper``'s word: signed with one of its keys the hub
    registered (``ring``, :func:`~renkei.kernel.records.keyring`), not revoked when the
    database stored the receipt (its clock, not the receipt's own time)."""
    if not (permit_signature and digest and signature):
        return False
    return any(
        k.party == keeper
        and k.valid_at(stored_at)
        and attest.is_receipt(k.key, permit_signature, digest, signature)
        for k in ring.values()
    )


async def keep_receipt(pool: asyncpg.Pool, receipt: ProviderReceipt) -> bool:
    """Keep the provider's receipt of an attempt (a retried answer of the same attempt finds the
    first one kept and leaves it: one receipt per attempt). Whether this one was kept now."""
    kept = await pool.fetchval(
        "INSERT INTO records.answer_receipts (keeper, attempt_key, answer_digest,"
        " permit_signature, signature, answered_at, permit)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)"
        " ON CONFLICT (keeper, attempt_key) DO NOTHING RETURNING true",
        receipt.keeper,
        receipt.attempt_key,
        receipt.answer_digest,
        receipt.permit_signature,
        receipt.signature,
        receipt.answered_at,
        receipt.permit.model_dump_json() if receipt.permit is not None else None,
    )
    return kept is True


# How long a group's one statement may take before its receipts are kept each on its own: it
# takes milliseconds, unless it waits on a row another transaction holds (a row of the same
# attempt not yet committed), which must hold back only the receipt of that attempt.
GROUP_WAIT = 2.0


class ReceiptGroup:
    """Keeps a provider's receipts (:func:`keep_receipt`) for many concurrent answers, in one
    statement for all those that arrive while the last one commits (no timer: a lone receipt is
    kept at once).

    A call returns once its receipt is durable, as :func:`keep_receipt` does; each row stands
    on its own (one receipt per attempt, a second of the same attempt left), so a group needs no
    transaction. When the database refuses a group's statement (a receipt it will not take), or
    the statement waits longer than :data:`GROUP_WAIT` (on a row of one of its attempts that
    another transaction holds), each receipt of the group is kept on its own, apart from the
    next groups, so only that call fails or waits; when the database is away, every call of the
    group hears it, and its caller retries it as it would a lone one.
    """

    def __init__(self, pool: asyncpg.Pool, *, most: int = 500, wait: float = GROUP_WAIT) -> None:
        self._pool = pool
        self._most = most
        self._wait = wait
        self._waiting: list[tuple[ProviderReceipt, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._alone: set[asyncio.Task[None]] = set()
        self.statements = 0  # groups kept in one statement (receipts kept alone not counted)

    async def keep(self, receipt: ProviderReceipt) -> bool:
        """Keep ``receipt``; whether it was kept now (else its attempt had one already, or
        another of the same group with another digest was kept)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((receipt, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
            try:
                async with self._pool.acquire() as conn:
                    async with asyncio.timeout(self._wait):  # cancelled in the database too
                        kept = await keep_receipts(conn, [r for r, _ in group])
            except asyncpg.PostgresConnectionError as e:  # the database away: all hear it
                self._tell(group, e)
                continue
            except (asyncpg.PostgresError, TimeoutError):  # refused, or waiting on a held row
                for receipt, done in group:  # each on its own: only that one fails, or waits
                    task = asyncio.create_task(self._keep_alone(receipt, done))
                    self._alone.add(task)
                    task.add_done_callback(self._alone.discard)
                continue
            except Exception as e:  # the database away: every call of the group hears it
                self._tell(group, e)
                continue
            self.statements += 1
            for receipt, done in group:
                if not done.done():  # a caller cancelled meanwhile: its receipt stands
                    done.set_result((receipt.attempt_key, receipt.answer_digest) in kept)

    @staticmethod
    def _tell(group: list[tuple[ProviderReceipt, asyncio.Future[bool]]], e: BaseException) -> None:
        for _, done in group:
            if not done.done():
                done.set_exception(e)

    async def _keep_alone(self, receipt: ProviderReceipt, done: asyncio.Future[bool]) -> None:
        try:
            kept = await keep_receipt(self._pool, receipt)
        except Exception as e:
            if not done.done():
                done.set_exception(e)
        else:
            if not done.done():
                done.set_result(kept)


async def keep_receipts(
    pool: asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy, kept: list[ProviderReceipt]
) -> set[tuple[str, str]]:
    """:func:`keep_receipt` for several receipts, in one statement (all or none); the attempt
    and digest of each kept now."""
    rows = await pool.fetch(
        "INSERT INTO records.answer_receipts (keeper, attempt_key, answer_digest,"
        " permit_signature, signature, answered_at, permit)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::timestamptz[], $7::text[]::jsonb[])"
        " ON CONFLICT (keeper, attempt_key) DO NOTHING RETURNING attempt_key, answer_digest",
        [r.keeper for r in kept],
        [r.attempt_key for r in kept],
        [r.answer_digest for r in kept],
        [r.permit_signature for r in kept],
        [r.signature for r in kept],
        [r.answered_at for r in kept],
        [r.permit.model_dump_json() if r.permit is not None else None for r in kept],
    )
    return {(r["attempt_key"], r["answer_digest"]) for r in rows}


async def receipts(pool: asyncpg.Pool | asyncpg.Connection, keeper: str) -> list[ProviderReceipt]:
    """``keeper``'s receipts, oldest first."""
    rows = await pool.fetch(
        "SELECT * FROM records.answer_receipts WHERE keeper = $1 ORDER BY id", keeper
    )
    return [
        ProviderReceipt(
            **{k: r[k] for k in ProviderReceipt.model_fields if k != "permit"},
            permit=_permit(r["permit"]),
        )
        for r in rows
    ]


def _permit(kept: object) -> SignedPermit | None:
    """A kept permit, however the connection decodes ``jsonb`` (text, or Python values)."""
    if kept is None:
        return None
    if isinstance(kept, str | bytes):
        return SignedPermit.model_validate_json(kept)
    return SignedPermit.model_validate(kept)


async def reconcile(
    pool: asyncpg.Pool,
    hub: Ed25519PublicKey,
    *,
    settled: dt.timedelta = dt.timedelta(0),
    providers: Sequence[str] | None = None,
) -> list[Mismatch]:
    """Every attempt where the providers' receipts and the hub's outcomes disagree, oldest
    first. ``settled``: only receipts at least this old (a flow tells the hub its outcomes a
    moment after the answer); ``providers``: only these providers' attempts.

    A receipt counts only if it verifies under its keeper's key registered by the hub (one
    that does not is reported as such: it is no one's word)."""
    from renkei.kernel.records._witness import keyring

    found: list[Mismatch] = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        ring = await keyring(conn, hub)
        before = dt.datetime.now(dt.UTC) - settled
        for r in await conn.fetch(
            "SELECT p.*, h.requester, h.provider, h.outcome AS decision, o.outcome"
            " FROM records.answer_receipts p"
            " LEFT JOIN records.access_records h ON h.keeper = 'hub'"
            " AND h.attempt_key = p.attempt_key"
            " LEFT JOIN records.attempt_outcomes o ON o.attempt_key = p.attempt_key"
            " WHERE p.answered_at <= $1 AND ($2::text[] IS NULL OR p.keeper = ANY($2))"
            " AND (o.outcome IS DISTINCT FROM 'provided' OR o.receipt IS NULL)"
            " ORDER BY p.id",
            before,
            list(providers) if providers is not None else None,
        ):
            signed = receipt_holds(
                ring,
                r["keeper"],
                r["permit_signature"],
                r["answer_digest"],
                r["signature"],
                r["stored_at"],
            )
            if not signed:
                problem = "a receipt its keeper's registered key did not sign"
            elif r["requester"] is None:
                problem = "the provider answered an attempt the hub has no record of"
            elif r["provider"] != r["keeper"]:  # its receipt of someone else's exchange
                problem = "the hub brokered this attempt with another provider"
            elif r["decision"] == "denied":  # no permit was issued: nothing could be answered
                problem = "the provider kept a receipt of an attempt the hub denied"
            elif r["outcome"] == "provided":
                problem = "the hub recorded it as provided without the provider's receipt"
            elif r["outcome"] == "not_asked":  # permitted ahead: the flow said it never asked
                problem = "the executor reported it as not asked, and the provider answered it"
            else:
                problem = "the provider answered; the executor reported " + (
                    "nothing" if r["outcome"] is None else f"it as {r['outcome']}"
                )
            found.append(
                Mismatch(
                    attempt_key=r["attempt_key"],
                    provider=r["keeper"],
                    requester=r["requester"] or "unknown",
                    reported=r["outcome"] or "nothing",
                    problem=problem,
                )
            )
        for r in await conn.fetch(
            "SELECT o.attempt_key, h.provider, h.requester FROM records.attempt_outcomes o"
            " JOIN records.access_records h ON h.keeper = 'hub' AND h.attempt_key = o.attempt_key"
            " WHERE o.outcome = 'provided' AND o.receipt IS NOT NULL"
            " AND ($1::text[] IS NULL OR h.provider = ANY($1))"
            " AND NOT EXISTS (SELECT 1 FROM records.answer_receipts p"
            "  WHERE p.keeper = h.provider AND p.attempt_key = o.attempt_key)"
            " ORDER BY o.chain_seq",
            list(providers) if providers is not None else None,
        ):
            found.append(
                Mismatch(
                    attempt_key=r["attempt_key"],
                    provider=r["provider"],
                    requester=r["requester"],
                    reported="provided",
                    problem="the hub holds the provider's receipt; the provider's own record"
                    " of the answer is missing",
                )
            )
        # Reported as never asked, and yet the request reached the provider's gate (it keeps a
        # record of every request it decides, answered or refused): it was asked. (One the
        # provider answered is listed above, by its receipt.)
        for r in await conn.fetch(
            "SELECT o.attempt_key, h.provider, h.requester FROM records.attempt_outcomes o"
            " JOIN records.access_records h ON h.keeper = 'hub' AND h.attempt_key = o.attempt_key"
            " WHERE o.outcome = 'not_asked' AND h.provider <> h.requester"
            " AND ($1::text[] IS NULL OR h.provider = ANY($1))"
            " AND EXISTS (SELECT 1 FROM records.access_records p"
            "  WHERE p.keeper = h.provider AND p.attempt_key = o.attempt_key)"
            " AND NOT EXISTS (SELECT 1 FROM records.answer_receipts p"
            "  WHERE p.keeper = h.provider AND p.attempt_key = o.attempt_key)"
            " ORDER BY o.chain_seq",
            list(providers) if providers is not None else None,
        ):
            found.append(
                Mismatch(
                    attempt_key=r["attempt_key"],
                    provider=r["provider"],
                    requester=r["requester"],
                    reported="not_asked",
                    problem="the executor reported it as not asked, and the provider's gate"
                    " decided it",
                )
            )
    return found
