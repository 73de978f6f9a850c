"""What became of each linkage attempt, appended once the flow learns it.

An attempt's access records are written when the hub decides it, before the provider is asked,
and never change. Its outcome is a row of its own, appended by the hub: one per attempt, in a
hash chain of outcomes (``chain_seq``, ``prev_hash``, ``outcome_hash``), signed with the hub's
key and bound to the hub's record of the attempt by that record's hash.

- ``provided``: the provider's answer came back and its signature verified;
- ``denied``: the whitelist (the hub's or the provider's gate) refused it;
- ``no_answer``: no answer in time (no worker took it, or none answered);
- ``failed``: it ended in an error (or an answer the provider had not signed);
- ``cancelled``: the flow was cancelled while it waited for the answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Literal, get_args

import asyncpg
from pydantic import BaseModel, ConfigDict

from renkei.kernel.records._chain import GENESIS, HUB, RecordSigner

Outcome = Literal["provided", "denied", "no_answer", "failed", "cancelled"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
_LOCK = (7_350_101, 0)  # advisory lock of the outcomes chain
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
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{o.prev_hash}\n{canonical}".encode()).hexdigest()


def outcome_message(seq: int, digest: str) -> bytes:
    """What the hub signs of an outcome."""
    return f"renkei/outcome/v1|{seq}|{digest}".encode()


async def record_outcome(
    pool: asyncpg.Pool, attempt_key: str, outcome: Outcome, signer: RecordSigner
) -> AttemptOutcome | None:
    """Append ``outcome`` for the attempt ``attempt_key``, unless one is already recorded (a
    retried call finds it and gets it back). ``None`` if the hub has no record of the attempt.
    Only the hub writes outcomes; ``provided`` needs the provider's own record of the attempt
    (its gate admitted the request)."""
    if signer.party != HUB:
        raise PermissionError(f"{signer.party} may not write outcomes")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_LOCK)
        known = await conn.fetchrow(
            "SELECT * FROM records.attempt_outcomes WHERE attempt_key = $1", attempt_key
        )
        if known is not None:
            return _from_row(known)
        hub = await conn.fetchrow(
            "SELECT record_hash, provider FROM records.access_records"
            " WHERE keeper = $1 AND attempt_key = $2",
            HUB,
            attempt_key,
        )
        if hub is None:
            return None
        if outcome == "provided" and not await conn.fetchval(
            "SELECT 1 FROM records.access_records"
            " WHERE keeper = $1 AND attempt_key = $2 AND outcome = 'allowed'",
            hub["provider"],
            attempt_key,
        ):
            raise PermissionError("no provider record of the attempt: not recorded as provided")
        last = await conn.fetchrow(
            "SELECT chain_seq, outcome_hash FROM records.attempt_outcomes"
            " ORDER BY chain_seq DESC LIMIT 1"
        )
        seq, prev = (last["chain_seq"], last["outcome_hash"]) if last else (0, GENESIS)
        o = AttemptOutcome(
            attempt_key=attempt_key,
            outcome=outcome,
            record_hash=hub["record_hash"],
            chain_seq=seq + 1,
            prev_hash=prev,
            recorded_at=dt.datetime.now(dt.UTC),
        )
        digest = outcome_hash(o)
        o = o.model_copy(
            update={
                "outcome_hash": digest,
                "signer": signer.party,
                "signature": base64.b64encode(
                    signer.key.sign(outcome_message(seq + 1, digest))
                ).decode(),
            }
        )
        await conn.execute(
            "INSERT INTO records.attempt_outcomes (attempt_key, outcome, record_hash, chain_seq,"
            " prev_hash, outcome_hash, recorded_at, signer, signature)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            o.attempt_key,
            o.outcome,
            o.record_hash,
            o.chain_seq,
            o.prev_hash,
            o.outcome_hash,
            o.recorded_at,
            o.signer,
            o.signature,
        )
        return o


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
