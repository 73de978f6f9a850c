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
    found = (await record_outcomes(pool, [(attempt_key, outcome)], signer))[0]
    if isinstance(found, PermissionError):
        raise found
    return found


async def record_outcomes(
    pool: asyncpg.Pool, reported: Sequence[tuple[str, Outcome]], signer: RecordSigner
) -> list[AttemptOutcome | PermissionError | None]:
    """Append several attempts' outcomes in one transaction (one lock, one read of the head),
    each as :func:`record_outcome` would; for each, what it returns or the refusal it raises.
    A refused one leaves the others to be recorded."""
    if signer.party != HUB:
        raise PermissionError(f"{signer.party} may not write outcomes")
    for _, outcome in reported:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
    out: list[AttemptOutcome | PermissionError | None] = []
    if not reported:
        return out
    keys = list({key for key, _ in reported})
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_LOCK)
        known = {
            r["attempt_key"]: _from_row(r)
            for r in await conn.fetch(
                "SELECT * FROM records.attempt_outcomes WHERE attempt_key = ANY($1)", keys
            )
        }
        hubs = {
            r["attempt_key"]: r
            for r in await conn.fetch(
                # a record written unchained is bound by the hash its writer signed
                "SELECT attempt_key, coalesce(entry_hash, record_hash) AS record_hash, provider"
                " FROM records.access_records"
                " WHERE keeper = $1 AND attempt_key = ANY($2)",
                HUB,
                keys,
            )
        }
        admitted = {
            r["attempt_key"]
            for r in await conn.fetch(
                "SELECT a.attempt_key FROM records.access_records a"
                " JOIN unnest($1::text[], $2::text[]) AS h(attempt_key, provider)"
                " ON a.keeper = h.provider AND a.attempt_key = h.attempt_key"
                " WHERE a.outcome = 'allowed'",
                [k for k, _ in reported if k in hubs],
                [hubs[k]["provider"] for k, _ in reported if k in hubs],
            )
        }
        last = await conn.fetchrow(
            "SELECT chain_seq, outcome_hash FROM records.attempt_outcomes"
            " ORDER BY chain_seq DESC LIMIT 1"
        )
        seq, prev = (last["chain_seq"], last["outcome_hash"]) if last else (0, GENESIS)
        new: list[AttemptOutcome] = []
        for attempt_key, outcome in reported:
            if attempt_key in known:
                out.append(known[attempt_key])
                continue
            hub = hubs.get(attempt_key)
            if hub is None:
                out.append(None)
                continue
            if outcome == "provided" and attempt_key not in admitted:
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
        if new:
            await conn.executemany(
                "INSERT INTO records.attempt_outcomes (attempt_key, outcome, record_hash,"
                " chain_seq, prev_hash, outcome_hash, recorded_at, signer, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
