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
from typing import Literal, NamedTuple

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
    signer: str | None = None  # the party that wrote it: the keeper, or the hub
    signature: str | None = None  # the writer's Ed25519 signature over the record's hash


class RecordSigner(NamedTuple):
    """The party writing records, and its signing key."""

    party: str
    key: Ed25519PrivateKey


_CHAINED = ("chain_seq", "prev_hash", "record_hash", "recorded_at")
_SIGNED = ("signer", "signature")
_CONTENT = [f for f in AccessRecord.model_fields if f not in (*_CHAINED, *_SIGNED)]
_COLUMNS = [*_CONTENT, *_CHAINED, *_SIGNED]


def _record_message(keeper: str, seq: int, digest: str) -> bytes:
    return f"renkei/record/v1|{keeper}|{seq}|{digest}".encode()


def may_write(writer: str, keeper: str) -> bool:
    """Who may add to whose chain: a party to its own; the hub to its own and to a requester's
    (it records the requester's side of every attempt it brokers, in the same transaction)."""
    return writer == keeper or writer == HUB


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
    conn: Conn, records: Sequence[AccessRecord], signer: RecordSigner | None = None
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
                digest = record_hash(chained)
                signed: dict[str, object] = {"record_hash": digest}
                if signer is not None:
                    if not may_write(signer.party, keeper):
                        raise PermissionError(f"{signer.party} may not write {keeper}'s records")
                    signed["signer"] = signer.party
                    signed["signature"] = base64.b64encode(
                        signer.key.sign(_record_message(keeper, seq, digest))
                    ).decode()
                if seq == 1:  # a new chain: into the keeper registry, so it cannot vanish unseen
                    await conn.execute(
                        "INSERT INTO records.keepers (keeper) VALUES ($1) ON CONFLICT DO NOTHING",
                        keeper,
                    )
                chained = chained.model_copy(update=signed)
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


async def write(
    pool: asyncpg.Pool, *records: AccessRecord, signer: RecordSigner | None = None
) -> list[AccessRecord]:
    """Append each record to its keeper's chain unless its attempt is already recorded there.

    All of them or none: the hub writes the requester's and its own record together. Many
    records in one call are written as one batch (a few round trips per keeper, not per record).
    ``signer`` signs each new record: :func:`verify` refuses a record no entitled party signed
    once a chain holds signed records.
    """
    async with pool.acquire() as conn, conn.transaction():
        written, new = await _append(conn, records, signer)
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


# -- checkpoints (witnessing) and verification --


def _checkpoint_message(keeper: str, seq: int, digest: str, at: dt.datetime) -> bytes:
    return f"renkei/checkpoint/v1|{keeper}|{seq}|{digest}|{_canonical(at)}".encode()


def key_id(signer: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = signer.public_key() if isinstance(signer, Ed25519PrivateKey) else signer
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Checkpoint(BaseModel):
    """A party's signature over a chain's head: what that party saw, at that moment."""

    keeper: str
    chain_seq: int
    record_hash: str
    signed_at: dt.datetime
    key_id: str
    signature: str
    signer: str = HUB


def witnesses(party: str, keeper: str) -> bool:
    """Whether ``party`` signs the heads of ``keeper``'s chain.

    Every chain is witnessed by a party other than each of its writers: the hub witnesses every
    org's chain (which the hub and the org write), and each org witnesses the hub's chain and its
    own (into which the hub writes the org's side as requester). Rewriting a chain, even with its
    writer's key, then leaves it differing from what a witness signed.
    """
    if party == HUB:
        return keeper != HUB
    return keeper in (HUB, party)


async def checkpoint(
    pool: asyncpg.Pool, signer: Ed25519PrivateKey | RecordSigner
) -> list[Checkpoint]:
    """Sign the current head of every chain ``signer``'s party witnesses (already signed: skipped).

    A bare key signs as the hub.
    """
    if isinstance(signer, Ed25519PrivateKey):
        signer = RecordSigner(HUB, signer)
    made: list[Checkpoint] = []
    kid = key_id(signer.key)
    async with pool.acquire() as conn, conn.transaction():
        # Heads only (positions and hashes): a party may read those of every chain it witnesses.
        heads = await conn.fetch("SELECT keeper, chain_seq, record_hash FROM records.chain_heads()")
        for h in heads:
            if not witnesses(signer.party, h["keeper"]):
                continue
            at = dt.datetime.now(dt.UTC)
            signature = signer.key.sign(
                _checkpoint_message(h["keeper"], h["chain_seq"], h["record_hash"], at)
            )
            cp = Checkpoint(
                keeper=h["keeper"],
                chain_seq=h["chain_seq"],
                record_hash=h["record_hash"],
                signed_at=at,
                key_id=kid,
                signature=base64.b64encode(signature).decode(),
                signer=signer.party,
            )
            status = await conn.execute(
                "INSERT INTO records.checkpoints"
                " (keeper, chain_seq, record_hash, signed_at, key_id, signature, signer)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                *cp.model_dump().values(),
            )
            if status.endswith(" 1"):
                made.append(cp)
    return made


class Head(BaseModel):
    """One chain's head as exported for safekeeping elsewhere (an auditor's, a citizen's copy)."""

    keeper: str
    chain_seq: int
    record_hash: str


async def heads(pool: asyncpg.Pool) -> list[Head]:
    """Every chain's current head."""
    rows = await pool.fetch("SELECT keeper, chain_seq, record_hash FROM records.chain_heads()")
    return [Head(**dict(r)) for r in rows]


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


class PartyKey(NamedTuple):
    party: str
    key: Ed25519PublicKey
    revoked_at: dt.datetime | None

    def valid_at(self, at: dt.datetime | None) -> bool:
        return self.revoked_at is None or (at is not None and at < self.revoked_at)


async def keyring(conn: Conn, hub: Ed25519PublicKey) -> dict[str, PartyKey]:
    """Every party signing key the hub registered (revoked ones too, with when), by key id."""
    ring = {key_id(hub): PartyKey(HUB, hub, None)}
    for r in await conn.fetch(
        "SELECT party, signing_public, sealing_public, revoked_at, hub_signature FROM trust.parties"
    ):
        message = f"renkei/party/v1|{r['party']}|{r['signing_public']}|{r['sealing_public']}"
        try:
            hub.verify(base64.b64decode(r["hub_signature"]), message.encode())
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(r["signing_public"]))
        except (InvalidSignature, ValueError):
            continue  # not the hub's word
        ring.setdefault(key_id(public), PartyKey(r["party"], public, r["revoked_at"]))
    return ring


async def _chain(conn: Conn, keeper: str) -> AsyncIterator[asyncpg.Record]:
    async for row in conn.cursor(
        "SELECT * FROM records.access_records WHERE keeper = $1 ORDER BY chain_seq, id", keeper
    ):
        yield row


async def verify(
    pool: asyncpg.Pool,
    hub: Ed25519PrivateKey | Ed25519PublicKey,
    keepers: Sequence[str] | None = None,
    *,
    against: Sequence[Head] = (),
) -> Verification:
    """Walk every keeper's chain; report the first broken link of each.

    ``hub`` is the hub's public key (the trust anchor: every other party's key is read from the
    registry the hub signed). Found: a changed, inserted, removed or reordered record; a record
    no party entitled to write it signed (or an unsigned one after signed ones); a chain that
    differs from what a witness signed, or ends before it; a chain that vanished whole (from the
    keeper registry, from the hub's records of the attempts it brokered, or from ``against``, a
    copy of the heads kept elsewhere).
    """
    public = hub.public_key() if isinstance(hub, Ed25519PrivateKey) else hub
    breaks: list[Break] = []
    total = 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        ring = await keyring(conn, public)
        names = (
            list(keepers)
            if keepers
            else [
                r["keeper"]
                for r in await conn.fetch(
                    "SELECT keeper FROM records.access_records UNION"
                    " SELECT keeper FROM records.checkpoints UNION"
                    " SELECT keeper FROM records.keepers ORDER BY keeper"
                )
            ]
        )
        names = sorted({*names, *(h.keeper for h in against if not keepers)})
        checkpoints = await conn.fetch("SELECT * FROM records.checkpoints")
        by_keeper: dict[str, list[asyncpg.Record]] = {}
        for cp in checkpoints:
            by_keeper.setdefault(cp["keeper"], []).append(cp)
        exported = {h.keeper: h for h in against}
        for keeper in names:
            count, found = await _verify_chain(
                conn, keeper, by_keeper.get(keeper, []), ring, exported.get(keeper)
            )
            total += count
            if found is None and count == 0 and keeper in names:
                registered = await conn.fetchval(
                    "SELECT first_seen FROM records.keepers WHERE keeper = $1", keeper
                )
                if registered is not None:
                    found = Break(
                        keeper=keeper,
                        chain_seq=1,
                        problem=f"the chain vanished: kept since {registered:%Y-%m-%d},"
                        " no record is left",
                    )
            if found is None:
                found = await _missing_requester_records(conn, keeper)
            if found is not None:
                breaks.append(found)
    return Verification(
        keepers=len(names), records=total, checkpoints=len(checkpoints), breaks=breaks
    )


async def _missing_requester_records(conn: Conn, keeper: str) -> Break | None:
    """The hub records both sides of every attempt it brokers in one transaction: a requester's
    chain that lacks one of them lost it."""
    if keeper == HUB:
        return None
    row = await conn.fetchrow(
        "SELECT h.chain_seq FROM records.access_records h WHERE h.keeper = $1"
        " AND h.requester = $2 AND NOT EXISTS (SELECT 1 FROM records.access_records r"
        " WHERE r.keeper = $2 AND r.attempt_key = h.attempt_key)"
        " ORDER BY h.chain_seq LIMIT 1",
        HUB,
        keeper,
    )
    if row is None:
        return None
    return Break(
        keeper=keeper,
        chain_seq=0,
        problem=f"lacks its record of the attempt in the hub's record {row['chain_seq']} (removed)",
    )


async def _verify_chain(
    conn: Conn,
    keeper: str,
    marks: list[asyncpg.Record],
    ring: dict[str, PartyKey],
    exported: Head | None,
) -> tuple[int, Break | None]:
    prev = GENESIS
    expected = 1
    count = 0
    signed_seen = False
    at_seq: dict[int, str] = {}
    wanted = {m["chain_seq"] for m in marks} | ({exported.chain_seq} if exported else set())
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
        unsigned = _signature_problem(rec, ring, signed_seen)
        if unsigned is not None:
            return count, Break(keeper=keeper, chain_seq=seq, problem=unsigned)
        signed_seen = signed_seen or rec.signature is not None
        if seq in wanted:
            at_seq[seq] = rec.record_hash or ""
        prev = rec.record_hash or ""
        expected += 1
    for mark in sorted(marks, key=lambda m: m["chain_seq"]):
        seq = mark["chain_seq"]
        signer = mark["signer"] or HUB
        if not _checkpoint_ok(mark, ring, signer):
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"checkpoint signature is not {signer}'s",
            )
        if seq >= expected:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"the chain ends at {expected - 1} but was signed up to {seq} by {signer}",
            )
        if at_seq.get(seq) != mark["record_hash"]:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"differs from the checkpoint {signer} signed (rewritten)",
            )
    if exported is not None:
        if exported.chain_seq >= expected:
            return count, Break(
                keeper=keeper,
                chain_seq=exported.chain_seq,
                problem=f"the chain ends at {expected - 1} but the exported head is at"
                f" {exported.chain_seq}",
            )
        if at_seq.get(exported.chain_seq) != exported.record_hash:
            return count, Break(
                keeper=keeper,
                chain_seq=exported.chain_seq,
                problem="differs from the exported head (rewritten)",
            )
    return count, None


def _signature_problem(
    rec: AccessRecord, ring: dict[str, PartyKey], signed_seen: bool
) -> str | None:
    if rec.signature is None:
        # Records from before signatures stand as they are; none may follow a signed one.
        return "unsigned, after signed records (written without a key)" if signed_seen else None
    writer = rec.signer or ""
    if not may_write(writer, rec.keeper):
        return f"written by {writer!r}, who may not write {rec.keeper}'s records"
    for candidate in ring.values():
        if candidate.party != writer:
            continue
        try:
            candidate.key.verify(
                base64.b64decode(rec.signature),
                _record_message(rec.keeper, rec.chain_seq or 0, rec.record_hash or ""),
            )
        except (InvalidSignature, ValueError):
            continue
        if not candidate.valid_at(rec.recorded_at):
            return f"signed with {writer}'s key after it was revoked"
        return None
    return f"its signature is not {writer}'s"


def _checkpoint_ok(mark: asyncpg.Record, ring: dict[str, PartyKey], signer: str) -> bool:
    found = ring.get(mark["key_id"])
    if found is None or found.party != signer or not found.valid_at(mark["signed_at"]):
        return False
    try:
        found.key.verify(
            base64.b64decode(mark["signature"]),
            _checkpoint_message(
                mark["keeper"], mark["chain_seq"], mark["record_hash"], mark["signed_at"]
            ),
        )
    except (InvalidSignature, ValueError):
        return False
    return True
