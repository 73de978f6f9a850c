"""What became of each linkage attempt, appended once the flow learns it.

An attempt's access records are written when the hub decides it, before the provider is asked,
and never change. Its outcome is a row of its own, appended by the hub: one per attempt, in a
hash chain of outcomes (``chain_seq``, ``prev_hash``, ``outcome_hash``), signed with the hub's
key and bound to the hub's record of the attempt by that record's hash.

- ``provided``: the provider answered, on the provider's word: its receipt (its signature over
  the permit and the digest of its answer, see :mod:`renkei.kernel.attest`) verified under its
  registered, unrevoked key and binds this very attempt; the outcome row keeps the receipt;
- ``unreceipted``: the executor's flow reported ``provided`` without a receipt that holds: the
  attempt was permitted and no answer the provider signed for it reached the hub (the hub
  writes this, and logs the refusal, instead of ``provided``);
- ``denied``: the whitelist (the hub's or the provider's gate) refused it;
- ``no_answer``: no answer in time (no worker took it, or none answered);
- ``failed``: it ended in an error (or an answer the provider had not signed);
- ``cancelled``: the flow was cancelled while it waited for the answer;
- ``not_asked``: permitted ahead (the hub brokered it before the flow reached its step, see
  :mod:`renkei.bpf.ahead`), and the flow ended before it asked the provider (an earlier step
  failed or was denied, the flow was rejected, cancelled or continued as new): the provider
  never received the request. A provider's receipt for such an attempt is a mismatch
  (:func:`~renkei.kernel.records.reconcile`): it was asked.

Every outcome but ``provided`` is the executor's word: the provider's own receipts
(:mod:`renkei.kernel.records._receipts`) show where it hid an answered exchange.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Literal, get_args

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict

from renkei.kernel import attest, permits
from renkei.kernel.permits import AnswerReceipt
from renkei.kernel.records._chain import GENESIS, HUB, Conn, RecordSigner, lock_platform

Outcome = Literal[
    "provided", "denied", "no_answer", "failed", "cancelled", "unreceipted", "not_asked"
]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
OUTCOMES_LOCK = "outcomes"  # the outcomes chain's row in records.platform_locks (migration 0054)
OUTCOMES_CHAIN = "hub (outcomes)"  # how verification names the chain of outcomes


class AttemptOutcome(BaseModel):
    """The outcome of one attempt, as the hub appended it."""

    model_config = ConfigDict(frozen=True)

    attempt_key: str
    outcome: Outcome
    record_hash: str
    chain_seq: int | None = None
    prev_hash: str | None = None
    outcome_hash: str | None = None
    recorded_at: dt.datetime | None = None
    signer: str | None = None
    signature: str | None = None
    # The provider's receipt, kept with a ``provided`` outcome (none before receipts).
    answer_digest: str | None = None
    permit_signature: str | None = None
    receipt: str | None = None


def outcome_hash(o: AttemptOutcome) -> str:
    """The hash of ``o``: its fields, its place in the chain and its predecessor's hash."""
    recorded = (
        o.recorded_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
        if o.recorded_at
        else None
    )
    body = {
        "attempt_key": o.attempt_key,
        "outcome": o.outcome,
        "record_hash": o.record_hash,
        "chain_seq": o.chain_seq,
        "recorded_at": recorded,
    }
    if o.receipt is not None:  # an outcome from before receipts hashes as it did
        body |= {
            "answer_digest": o.answer_digest,
            "permit_signature": o.permit_signature,
            "receipt": o.receipt,
        }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{o.prev_hash}\n{canonical}".encode()).hexdigest()


def outcome_message(seq: int, digest: str) -> bytes:
    """What the hub signs of an outcome."""
    return f"renkei/outcome/v1|{seq}|{digest}".encode()


def receipt_problem(
    receipt: AnswerReceipt | None,
    key: str,
    provider: str,
    hub: Ed25519PublicKey,
    providers_keys: Sequence[Ed25519PublicKey],
) -> str | None:
    """Why ``receipt`` is not the provider's receipt for the attempt ``key`` (``None``: it is).
    ``providers_keys``: the provider's registered signing keys not revoked now. Reads no
    answer: the receipt names it by its digest."""
    if receipt is None:
        return "no receipt from the provider"
    p = receipt.permit.permit
    if not permits.is_hubs(receipt.permit, hub):
        return "the receipt answers a permit the hub did not sign"
    if f"{p.workflow_id}/{p.run_id}/{p.step}" != key:
        return "the receipt is for another attempt"
    if p.provider != provider:
        return f"the receipt's permit is for {p.provider}, not {provider}"
    if not any(
        attest.is_receipt(k, receipt.permit.signature, receipt.digest, receipt.signature)
        for k in providers_keys
    ):
        return f"the receipt is not signed with {provider}'s registered (unrevoked) key"
    return None


Reported = tuple[str, Outcome] | tuple[str, Outcome, AnswerReceipt | None]


async def record_outcome(
    pool: asyncpg.Pool,
    attempt_key: str,
    outcome: Outcome,
    signer: RecordSigner,
    receipt: AnswerReceipt | None = None,
    *,
    require_receipts: bool = True,
) -> AttemptOutcome | None:
    """Append ``outcome`` for the attempt ``attempt_key``, unless one is already recorded (a
    retried call finds it and gets it back). ``None`` if the hub has no record of the attempt.
    Only the hub writes outcomes. ``provided`` is written only on the provider's receipt for the
    attempt (:func:`receipt_problem`); without one that holds, ``unreceipted`` is written
    instead (the caller sees it in what comes back). ``require_receipts=False`` (records made
    by hand, from before receipts) takes ``provided`` on the provider's own record of the
    attempt instead (its gate admitted the request), and refuses it without one."""
    found = (
        await record_outcomes(
            pool, [(attempt_key, outcome, receipt)], signer, require_receipts=require_receipts
        )
    )[0]
    if isinstance(found, PermissionError):
        raise found
    return found


async def record_outcomes(
    pool: asyncpg.Pool,
    reported: Sequence[Reported],
    signer: RecordSigner,
    *,
    require_receipts: bool = True,
) -> list[AttemptOutcome | PermissionError | None]:
    """Append several attempts' outcomes in one transaction (one lock, one read of the head),
    each as :func:`record_outcome` would; for each, what it returns or the refusal it raises.
    A refused one leaves the others to be recorded."""
    if signer.party != HUB:
        raise PermissionError(f"{signer.party} may not write outcomes")
    told = [(r[0], r[1], r[2] if len(r) == 3 else None) for r in reported]
    for _, outcome, _ in told:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
    if not told:
        return []
    async with pool.acquire() as conn, conn.transaction():
        return await _record(conn, told, signer, require_receipts=require_receipts)


async def collect_outcomes(
    conn: Conn,
    receipts: Sequence[tuple[str, AnswerReceipt]],
    signer: RecordSigner,
    written: set[str] | None = None,
) -> list[AttemptOutcome | PermissionError | None]:
    """Record ``provided`` for each attempt on the provider's receipt the hub collected itself,
    in ``conn``'s transaction, checked as :func:`record_outcomes` checks a forwarded one, and
    against the provider's own gate record of the attempt (it must say admitted). A
    receipt that does not hold is refused (the :class:`PermissionError` says why) and nothing
    is written for it: not even ``unreceipted``, so that a bad receipt row cannot take the
    place of the executor's own outcome. ``None``: the hub has no record of the attempt.
    ``written`` gathers the attempts recorded now (the others had their outcome already)."""
    if signer.party != HUB:
        raise PermissionError(f"{signer.party} may not write outcomes")
    if not receipts:
        return []
    return await _record(
        conn, [(key, "provided", r) for key, r in receipts], signer, collected=True, written=written
    )


async def _record(
    conn: Conn,
    told: Sequence[tuple[str, Outcome, AnswerReceipt | None]],
    signer: RecordSigner,
    *,
    require_receipts: bool = True,
    collected: bool = False,
    written: set[str] | None = None,
) -> list[AttemptOutcome | PermissionError | None]:
    """What :func:`record_outcomes` and :func:`collect_outcomes` do, in ``conn``'s transaction
    (``collected``: a ``provided`` whose receipt does not hold is refused, not written as
    ``unreceipted``)."""
    out: list[AttemptOutcome | PermissionError | None] = []
    keys = list({key for key, _, _ in told})
    # Read and checked before the chain's lock is taken: the hub's records of the attempts
    # (they never change) and, for each "provided", the provider's receipt against the
    # providers' keys not revoked now.
    hubs = {
        r["attempt_key"]: r
        for r in await conn.fetch(
            # a record written unchained is bound by the hash its writer signed
            "SELECT attempt_key, coalesce(entry_hash, record_hash) AS record_hash, provider,"
            " outcome AS decided FROM records.access_records"
            " WHERE keeper = $1 AND attempt_key = ANY($2)",
            HUB,
            keys,
        )
    }
    receipted: dict[str, AnswerReceipt] = {}
    problems: dict[str, str] = {}
    if require_receipts and any(o == "provided" for _, o, _ in told):
        from renkei.kernel.records._witness import keyring

        hub_public = signer.key.public_key()
        # Keys not revoked at the database's time (the clock revocations are stamped by).
        now = await conn.fetchval("SELECT now()")
        ring: dict[str, list[Ed25519PublicKey]] = {}
        for k in (await keyring(conn, hub_public)).values():
            if k.valid_at(now):
                ring.setdefault(k.party, []).append(k.key)
        for key, outcome, receipt in told:
            hub = hubs.get(key)
            if outcome != "provided" or hub is None or receipt is None:
                continue
            provider = hub["provider"]
            problem = receipt_problem(receipt, key, provider, hub_public, ring.get(provider, []))
            if problem is None:
                receipted[key] = receipt
            else:
                problems[key] = problem
    await lock_platform(conn, OUTCOMES_LOCK)
    known = {
        r["attempt_key"]: _from_row(r)
        for r in await conn.fetch(
            "SELECT * FROM records.attempt_outcomes WHERE attempt_key = ANY($1)", keys
        )
    }
    claimed = [k for k, o, _ in told if k in hubs and o == "provided" and k not in known]
    admitted: set[str] = set()
    # The provider's own gate record of the attempt, saying it admitted it: what a "provided"
    # rests on without a receipt (records from before receipts), and what a receipt the hub
    # collects must agree with (a gate that refused the request, or never received it, did
    # not answer it, whatever receipt row its org keeps).
    if claimed and (collected or not require_receipts):
        admitted = {
            r["attempt_key"]
            for r in await conn.fetch(
                "SELECT a.attempt_key FROM records.access_records a"
                " JOIN unnest($1::text[], $2::text[]) AS h(attempt_key, provider)"
                " ON a.keeper = h.provider AND a.attempt_key = h.attempt_key"
                " WHERE a.outcome = 'allowed'",
                claimed,
                [hubs[k]["provider"] for k in claimed],
            )
        }
    last = await conn.fetchrow(
        "SELECT chain_seq, outcome_hash FROM records.attempt_outcomes"
        " ORDER BY chain_seq DESC LIMIT 1"
    )
    seq, prev = (last["chain_seq"], last["outcome_hash"]) if last else (0, GENESIS)
    new: list[AttemptOutcome] = []
    for attempt_key, outcome, receipt in told:
        if attempt_key in known:
            out.append(known[attempt_key])
            continue
        hub = hubs.get(attempt_key)
        if hub is None:
            out.append(None)
            continue
        if outcome == "not_asked" and hub["decided"] != "allowed":
            # "permitted ahead, never asked": the executor's word against the hub's own record
            out.append(PermissionError("not_asked: the hub did not permit the attempt"))
            continue
        kept: AnswerReceipt | None = None
        if outcome == "provided" and require_receipts:
            kept = receipted.get(attempt_key)
            if collected and (kept is None or kept != receipt):
                out.append(PermissionError(problems.get(attempt_key, "the receipt does not hold")))
                continue
            if collected and attempt_key not in admitted:
                out.append(
                    PermissionError("the provider's gate has no record of admitting the attempt")
                )
                continue
            if kept is None or kept != receipt:
                outcome = "unreceipted"  # the executor's word alone: not provided
                kept = None
        elif outcome == "provided" and attempt_key not in admitted:
            out.append(
                PermissionError("no provider record of the attempt: not recorded as provided")
            )
            continue
        seq += 1
        o = AttemptOutcome(
            attempt_key=attempt_key,
            outcome=outcome,
            record_hash=hub["record_hash"],
            chain_seq=seq,
            prev_hash=prev,
            recorded_at=dt.datetime.now(dt.UTC),
            answer_digest=kept.digest if kept else None,
            permit_signature=kept.permit.signature if kept else None,
            receipt=kept.signature if kept else None,
        )
        digest = outcome_hash(o)
        o = o.model_copy(
            update={
                "outcome_hash": digest,
                "signer": signer.party,
                "signature": base64.b64encode(
                    signer.key.sign(outcome_message(seq, digest))
                ).decode(),
            }
        )
        prev = digest
        known[attempt_key] = o
        new.append(o)
        out.append(o)
        if written is not None:
            written.add(attempt_key)
    if new:
        await conn.executemany(
            "INSERT INTO records.attempt_outcomes (attempt_key, outcome, record_hash,"
            " chain_seq, prev_hash, outcome_hash, recorded_at, signer, signature,"
            " answer_digest, permit_signature, receipt)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            [
                (
                    o.attempt_key,
                    o.outcome,
                    o.record_hash,
                    o.chain_seq,
                    o.prev_hash,
                    o.outcome_hash,
                    o.recorded_at,
                    o.signer,
                    o.signature,
                    o.answer_digest,
                    o.permit_signature,
                    o.receipt,
                )
                for o in new
            ],
        )
    return out


def _from_row(row: asyncpg.Record) -> AttemptOutcome:
    return AttemptOutcome(**{k: row[k] for k in AttemptOutcome.model_fields})


async def outcomes(
    pool: asyncpg.Pool | asyncpg.Connection, attempt_keys: Sequence[str]
) -> dict[str, AttemptOutcome]:
    """The recorded outcome of each of ``attempt_keys`` that has one."""
    rows = await pool.fetch(
        "SELECT * FROM records.attempt_outcomes WHERE attempt_key = ANY($1)",
        list(set(attempt_keys)),
    )
    return {r["attempt_key"]: _from_row(r) for r in rows}


def outcome_of(decision: str, recorded: AttemptOutcome | None) -> str:
    """What to show for an attempt: its recorded outcome; ``denied`` when the hub denied it;
    ``pending`` while an allowed attempt has none (in flight, or recorded before outcomes)."""
    if recorded is not None:
        return recorded.outcome
    return "denied" if decision == "denied" else "pending"
