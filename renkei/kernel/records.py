"""Access records (アクセス記録): tamper-evident, kept by every party to a linkage.

Each linkage attempt leaves one record with the requester (under the requester's code for the
subject), one with the hub (under the hub's subject id) and, once the request reaches it, one
with the provider (under the provider's code). Every party's records form a hash chain: each
record carries its position in the keeper's chain, the hash of the keeper's previous record and
its own hash over all its fields. The table is append-only (a trigger refuses UPDATE, TRUNCATE
and any DELETE before the retention period), and :func:`checkpoint` signs the head of every
chain, so :func:`verify` finds a changed, deleted, inserted or reordered record, and a chain
cut short after a checkpoint.

The attempt key is ``workflow id / run id / step id``; a retried activity presents the same key
and finds its record already written, so every attempt leaves exactly one record per keeper.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict

from renkei.kernel import telemetry

Conn = asyncpg.Connection | PoolConnectionProxy

HUB = "hub"
GENESIS = "0" * 64
_CHAIN_LOCK = 7_350_100  # advisory lock class for one keeper's chain


class AccessRecord(BaseModel):
    """One access record, as its keeper stores it. ``subject_code`` is the keeper's own code."""

    model_config = ConfigDict(frozen=True)

    keeper: str
    attempt_key: str
    decided_at: dt.datetime
    requester: str
    provider: str
    task: str
    info: str
    legal_reference: str
    whitelist_row: str | None
    subject_code: str
    bpf: str
    bpf_version: int
    content_hash: str
    workflow_id: str
    run_id: str
    step: str
    outcome: Literal["allowed", "denied"]
    reason: str
    hold_until: dt.datetime | None = None
    hold_reason: str | None = None
    trigger: str | None = None
    # A child flow's linkage: the flow it ran for (the procedure the citizen applied for).
    parent_workflow_id: str | None = None
    parent_bpf: str | None = None
    purpose_task: str | None = None
    # Set when written:
    chain_seq: int | None = None
    prev_hash: str | None = None
    record_hash: str | None = None
    recorded_at: dt.datetime | None = None


_CHAINED = ("chain_seq", "prev_hash", "record_hash", "recorded_at")
_CONTENT = [f for f in AccessRecord.model_fields if f not in _CHAINED]
_COLUMNS = [*_CONTENT, *_CHAINED]


def _canonical(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return value


# Fields added after records were first written count in the hash only when set, so the hashes
# of older records stay what they were.
_LATER = frozenset({"trigger", "parent_workflow_id", "parent_bpf", "purpose_task"})


def record_hash(record: AccessRecord) -> str:
    """The hash of ``record``: every field, its place in the chain and its predecessor's hash."""
    body = {
        f: _canonical(getattr(record, f))
        for f in (*_CONTENT, "chain_seq", "recorded_at")
        if f not in _LATER or getattr(record, f) is not None
    }
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{record.prev_hash}\n{canonical}".encode()).hexdigest()


def _from_row(row: asyncpg.Record) -> AccessRecord:
    return AccessRecord(**{k: row[k] for k in _COLUMNS})


async def _append(
    conn: Conn, records: Sequence[AccessRecord]
) -> tuple[list[AccessRecord], list[AccessRecord]]:
    """Append ``records`` to their keepers' chains inside the caller's transaction.

    Per keeper: one lock (taken in keeper order, so concurrent writers never deadlock), one
    look-up of attempts already recorded, one read of the chain's head; then every new record
    in one batch. A record whose attempt is already in its keeper's chain is not written again:
    the stored one is returned in its place. Returns (every record, those newly written).
    """
    out: list[AccessRecord | None] = [None] * len(records)
    by_keeper: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_keeper.setdefault(r.keeper, []).append(i)
    new: list[AccessRecord] = []
    for keeper in sorted(by_keeper):
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _CHAIN_LOCK, keeper)
        mine = by_keeper[keeper]
        known = {
            row["attempt_key"]: _from_row(row)
            for row in await conn.fetch(
                "SELECT * FROM records.access_records WHERE keeper = $1 AND attempt_key = ANY($2)",
                keeper,
                list({records[i].attempt_key for i in mine}),
            )
        }
        last = await conn.fetchrow(
            "SELECT chain_seq, record_hash FROM records.access_records WHERE keeper = $1"
            " ORDER BY chain_seq DESC LIMIT 1",
            keeper,
        )
        seq, prev = (last["chain_seq"], last["record_hash"]) if last else (0, GENESIS)
        for i in mine:
            record = records[i]
            if record.attempt_key not in known:
                seq += 1
                chained = record.model_copy(
                    update={
                        "chain_seq": seq,
                        "prev_hash": prev,
                        # microseconds, as PostgreSQL keeps them: the hash survives the round trip
                        "recorded_at": dt.datetime.now(dt.UTC),
                    }
                )
                chained = chained.model_copy(update={"record_hash": record_hash(chained)})
                prev = chained.record_hash
                known[record.attempt_key] = chained
                new.append(chained)
            out[i] = known[record.attempt_key]
    if new:
        placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
        insert = (
            f"INSERT INTO records.access_records ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
        )
        rows = [tuple(getattr(c, f) for f in _COLUMNS) for c in new]
        if len(rows) == 1:  # the common case (a linkage): no batch machinery
            await conn.execute(insert, *rows[0])
        else:
            await conn.executemany(insert, rows)
    return [r for r in out if r is not None], new


async def write(pool: asyncpg.Pool, *records: AccessRecord) -> list[AccessRecord]:
    """Append each record to its keeper's chain unless its attempt is already recorded there.

    All of them or none: the hub writes the requester's and its own record together. Many
    records in one call are written as one batch (a few round trips per keeper, not per record).
    """
    async with pool.acquire() as conn, conn.transaction():
        written, new = await _append(conn, records)
    telemetry.count_records([r.keeper for r in new])
    return written


async def query(
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    keeper: str | None = None,
    provider: str | None = None,
    subject_code: str | None = None,
    bpf: str | None = None,
    workflow_id: str | None = None,
    limit: int = 1000,
) -> list[AccessRecord]:
    """Records matching every given filter, in the order they were written."""
    conds: list[str] = []
    args: list[object] = []
    for column, value in (
        ("keeper", keeper),
        ("provider", provider),
        ("subject_code", subject_code),
        ("bpf", bpf),
        ("workflow_id", workflow_id),
    ):
        if value is not None:
            args.append(value)
            conds.append(f"{column} = ${len(args)}")
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    args.append(limit)
    rows = await pool.fetch(
        f"SELECT * FROM records.access_records {where} ORDER BY id LIMIT ${len(args)}", *args
    )
    return [_from_row(r) for r in rows]


# -- checkpoints and verification --


def _checkpoint_message(keeper: str, seq: int, digest: str, at: dt.datetime) -> bytes:
    return f"renkei/checkpoint/v1|{keeper}|{seq}|{digest}|{_canonical(at)}".encode()


def key_id(signer: Ed25519PrivateKey) -> str:
    raw = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Checkpoint(BaseModel):
    keeper: str
    chain_seq: int
    record_hash: str
    signed_at: dt.datetime
    key_id: str
    signature: str


async def checkpoint(pool: asyncpg.Pool, signer: Ed25519PrivateKey) -> list[Checkpoint]:
    """Sign the current head of every keeper's chain (heads already signed are skipped)."""
    made: list[Checkpoint] = []
    kid = key_id(signer)
    async with pool.acquire() as conn, conn.transaction():
        heads = await conn.fetch(
            "SELECT DISTINCT ON (keeper) keeper, chain_seq, record_hash"
            " FROM records.access_records ORDER BY keeper, chain_seq DESC"
        )
        for h in heads:
            at = dt.datetime.now(dt.UTC)
            signature = signer.sign(
                _checkpoint_message(h["keeper"], h["chain_seq"], h["record_hash"], at)
            )
            cp = Checkpoint(
                keeper=h["keeper"],
                chain_seq=h["chain_seq"],
                record_hash=h["record_hash"],
                signed_at=at,
                key_id=kid,
                signature=base64.b64encode(signature).decode(),
            )
            status = await conn.execute(
                "INSERT INTO records.checkpoints"
                " (keeper, chain_seq, record_hash, signed_at, key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                *cp.model_dump().values(),
            )
            if status.endswith(" 1"):
                made.append(cp)
    return made


class Break(BaseModel):
    """The first broken link of one keeper's chain."""

    keeper: str
    chain_seq: int
    problem: str


class Verification(BaseModel):
    keepers: int
    records: int
    checkpoints: int
    breaks: list[Break]

    @property
    def ok(self) -> bool:
        return not self.breaks


async def _chain(conn: Conn, keeper: str) -> AsyncIterator[asyncpg.Record]:
    async for row in conn.cursor(
        "SELECT * FROM records.access_records WHERE keeper = $1 ORDER BY chain_seq, id", keeper
    ):
        yield row


async def verify(
    pool: asyncpg.Pool, signer: Ed25519PrivateKey, keepers: Sequence[str] | None = None
) -> Verification:
    """Walk every keeper's chain; report the first broken link of each."""
    public = signer.public_key()
    kid = key_id(signer)
    breaks: list[Break] = []
    total = 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        names = keepers or [
            r["keeper"]
            for r in await conn.fetch(
                "SELECT keeper FROM records.access_records UNION"
                " SELECT keeper FROM records.checkpoints ORDER BY keeper"
            )
        ]
        checkpoints = await conn.fetch("SELECT * FROM records.checkpoints")
        by_keeper: dict[str, dict[int, asyncpg.Record]] = {}
        for cp in checkpoints:
            by_keeper.setdefault(cp["keeper"], {})[cp["chain_seq"]] = cp
        for keeper in names:
            marks = by_keeper.get(keeper, {})
            found = await _verify_chain(conn, keeper, marks, public, kid)
            total += found[0]
            if found[1] is not None:
                breaks.append(found[1])
    return Verification(
        keepers=len(names), records=total, checkpoints=len(checkpoints), breaks=breaks
    )


async def _verify_chain(
    conn: Conn,
    keeper: str,
    marks: dict[int, asyncpg.Record],
    public: Ed25519PublicKey,
    kid: str,
) -> tuple[int, Break | None]:
    prev = GENESIS
    expected = 1
    count = 0
    async for row in _chain(conn, keeper):
        count += 1
        rec = _from_row(row)
        seq = rec.chain_seq or 0
        if seq != expected:
            problem = (
                f"record {expected} is missing"
                if seq > expected
                else f"record {seq} appears twice or out of order"
            )
            return count, Break(keeper=keeper, chain_seq=expected, problem=problem)
        if rec.prev_hash != prev:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem="does not follow the previous record (inserted, removed or reordered)",
            )
        if record_hash(rec) != rec.record_hash:
            return count, Break(
                keeper=keeper, chain_seq=seq, problem="its content differs from its hash"
            )
        mark = marks.get(seq)
        if mark is not None and mark["record_hash"] != rec.record_hash:
            return count, Break(
                keeper=keeper, chain_seq=seq, problem="differs from the signed checkpoint"
            )
        prev = rec.record_hash or ""
        expected += 1
    for seq, mark in sorted(marks.items()):
        if not _signature_ok(mark, public, kid):
            return count, Break(
                keeper=keeper, chain_seq=seq, problem="checkpoint signature is not valid"
            )
        if seq >= expected:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"the chain ends at {expected - 1} but was signed up to {seq}",
            )
    return count, None


def _signature_ok(mark: asyncpg.Record, public: Ed25519PublicKey, kid: str) -> bool:
    if mark["key_id"] != kid:
        return False
    try:
        public.verify(
            base64.b64decode(mark["signature"]),
            _checkpoint_message(
                mark["keeper"], mark["chain_seq"], mark["record_hash"], mark["signed_at"]
            ),
        )
    except InvalidSignature:
        return False
    return True
