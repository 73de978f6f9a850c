"""Access records and their hash chains: the record, its hash, appending and reading."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, get_args

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, TypeAdapter

from renkei.kernel import telemetry

Conn = asyncpg.Connection | PoolConnectionProxy

HUB = "hub"
GENESIS = "0" * 64


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
    # The ordinance-level task (主務省令で定める事務) the query named under ``task``, if any.
    sub_task: str | None = None
    # Set when written:
    chain_seq: int | None = None
    prev_hash: str | None = None
    record_hash: str | None = None
    recorded_at: dt.datetime | None = None
    signer: str | None = None  # the party that wrote it: the keeper, or the hub
    # The writer's Ed25519 signature over the record's hash (written chained), or over its
    # entry hash (written unchained: chained behind, by its keeper's chainer).
    signature: str | None = None
    entry_hash: str | None = None  # written unchained: the hash of its content, when written
    chained_by: str | None = None  # the chainer that gave it its place
    # The chainer's signature: over this one link (``link_from`` None), or, at the last link of
    # a batch, over the batch from place ``link_from`` to this one (the links before it in the
    # batch carry none: this link's hash covers theirs).
    link_signature: str | None = None
    link_from: int | None = None


class RecordSigner(NamedTuple):
    """The party writing records, and its signing key."""

    party: str
    key: Ed25519PrivateKey


_CHAINED = ("chain_seq", "prev_hash", "record_hash", "recorded_at")
_SIGNED = ("signer", "signature")
_LINKED = ("entry_hash", "chained_by", "link_signature", "link_from")
_CONTENT = [f for f in AccessRecord.model_fields if f not in (*_CHAINED, *_SIGNED, *_LINKED)]
_COLUMNS = [*_CONTENT, *_CHAINED, *_SIGNED, *_LINKED]
COLUMNS: tuple[str, ...] = tuple(_COLUMNS)  # a record's columns, in the table's order
_ROWS = TypeAdapter(list[AccessRecord])  # records as the JSON a group insert takes


def _record_message(keeper: str, seq: int, digest: str) -> bytes:
    return f"renkei/record/v1|{keeper}|{seq}|{digest}".encode()


def _entry_message(keeper: str, digest: str) -> bytes:
    return f"renkei/entry/v1|{keeper}|{digest}".encode()


def _link_message(keeper: str, seq: int, digest: str) -> bytes:
    return f"renkei/link/v1|{keeper}|{seq}|{digest}".encode()


def _batch_message(keeper: str, first: int, last: int, digest: str) -> bytes:
    """What a chainer signs for the links ``first`` to ``last`` of ``keeper``'s chain: the
    last one's record hash, which covers each link before it (migration 0067)."""
    return f"renkei/links/v1|{keeper}|{first}|{last}|{digest}".encode()


def may_chain(party: str, keeper: str) -> bool:
    """Who gives the records of ``keeper``'s chain their places: the keeper itself (the hub's
    worker for the hub's chain, an org's own worker for the org's: only it holds its key)."""
    return party == keeper


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
_LATER = frozenset({"trigger", "parent_workflow_id", "parent_bpf", "purpose_task", "sub_task"})


def record_hash(record: AccessRecord) -> str:
    """The hash of ``record``: every field, its place in the chain and its predecessor's hash."""
    return _hash_of(record.__dict__)


# What each hash covers, in the order the canonical JSON sorts it.
_HASHED = tuple(sorted((*_CONTENT, "chain_seq", "recorded_at")))
_ENTRY = tuple(f for f in _HASHED if f != "chain_seq")
# sort_keys kept although the fields come sorted: the JSON is what it always was, by definition.
_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


# The fields that hold a time: only they need :func:`_canonical` (a stored row's are the same
# columns, as ``timestamptz``).
_TIMES = frozenset(
    f
    for f, info in AccessRecord.model_fields.items()
    if dt.datetime in get_args(info.annotation) or info.annotation is dt.datetime
)


def _body(values: Mapping[str, object], fields: Sequence[str]) -> str:
    """The canonical JSON of ``fields`` of ``values``: a field added later (:data:`_LATER`)
    only when set."""
    body: dict[str, object] = {}
    for f in fields:
        value = values[f]
        if value is None:
            if f in _LATER:
                continue
        elif f in _TIMES:  # a time as UTC with microseconds, whatever its zone
            value = _canonical(value)
        body[f] = value
    return _ENCODE(body)


def _hash_of(values: Mapping[str, object]) -> str:
    """:func:`record_hash` of a record's values (a stored row, or a record's fields)."""
    return hashlib.sha256(f"{values['prev_hash']}\n{_body(values, _HASHED)}".encode()).hexdigest()


def entry_hash(record: AccessRecord) -> str:
    """The hash of what ``record`` says, without its place in the chain: what its writer signs
    when it writes the record unchained (its place and the link come later, from the chainer)."""
    return _entry_hash_of(record.__dict__)


def _entry_hash_of(values: Mapping[str, object]) -> str:
    """:func:`entry_hash` of a record's values."""
    return hashlib.sha256(f"entry\n{_body(values, _ENTRY)}".encode()).hexdigest()


def _from_row(row: asyncpg.Record) -> AccessRecord:
    return AccessRecord(**{k: row[k] for k in _COLUMNS})


async def lock_chain(
    conn: Conn, keeper: str, *, register: bool = True, nowait: bool = False
) -> bool:
    """Take ``keeper``'s chain lock for the caller's transaction: its row in the keeper registry,
    locked ``FOR NO KEY UPDATE`` (migration 0054; an org's role can lock its own keeper's row
    only, never the hub's nor another org's). A keeper not yet registered is registered first
    when ``register`` (its first record is about to be written); else ``False`` is returned and
    no lock is taken. ``nowait``: raise ``asyncpg.LockNotAvailableError`` at once if another
    transaction holds it."""
    lock = "SELECT 1 FROM records.keepers WHERE keeper = $1 FOR NO KEY UPDATE" + (
        " NOWAIT" if nowait else ""
    )
    if await conn.fetchval(lock, keeper) is not None:
        return True
    if not register:
        return False
    # a new chain: into the keeper registry, so it cannot vanish unseen
    await conn.execute(
        "INSERT INTO records.keepers (keeper) VALUES ($1) ON CONFLICT DO NOTHING", keeper
    )
    return await conn.fetchval(lock, keeper) is not None


async def lock_platform(conn: Conn, name: str) -> None:
    """Take the platform's lock ``name`` for the caller's transaction: its row in
    ``records.platform_locks``, made if missing, locked ``FOR NO KEY UPDATE`` (migration 0054;
    no org's role may read, insert or lock a row of it)."""
    lock = "SELECT 1 FROM records.platform_locks WHERE name = $1 FOR NO KEY UPDATE"
    if await conn.fetchval(lock, name) is None:
        await conn.execute(
            "INSERT INTO records.platform_locks (name) VALUES ($1) ON CONFLICT DO NOTHING", name
        )
        if await conn.fetchval(lock, name) is None:  # pragma: no cover - inserted just above
            raise RuntimeError(f"the platform lock {name!r} could not be taken")


async def append(
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
        await lock_chain(conn, keeper)
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
            " AND chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
            keeper,
        )
        seq, prev = (last["chain_seq"], last["record_hash"]) if last else (0, GENESIS)
        for i in mine:
            record = records[i]
            found = known.get(record.attempt_key)
            if found is not None:
                _refuse_overwrite(found, record, keeper, signer)
            if record.attempt_key not in known:
                seq += 1
                chained = record.model_copy(
                    update={
                        "chain_seq": seq,
                        "prev_hash": prev,
                        # microseconds, as PostgreSQL keeps them: the hash survives the round trip
                        "recorded_at": dt.datetime.now(dt.UTC),
                        # chained as written: no entry hash, and no chainer's link
                        "entry_hash": None,
                        "chained_by": None,
                        "link_signature": None,
                        "link_from": None,
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


def _refuse_overwrite(
    found: AccessRecord, record: AccessRecord, keeper: str, signer: RecordSigner | None
) -> None:
    """Refuse the hub's write of ``record`` into a requester's chain when that chain already
    holds a record of the attempt in another's hand.

    The requester's record of an attempt is the hub's to write. The one exception is an
    attempt the requester asked of itself (the hub's own record says provider = requester):
    the org's gate, its provider, writes that record first, and the hub finds it. Whether it
    is such an attempt is what the hub writes, never what the found record says: an org's role
    may only write records naming itself as provider, so a record of the org's own making
    always says so."""
    if (
        signer is not None
        and signer.party == HUB
        and keeper != HUB
        and found.signer not in (None, HUB)
        and not (record.provider == keeper and found.provider == keeper)
    ):
        # One already there in another's hand was set down before the hub could write it.
        raise PermissionError(
            f"{keeper}'s record of this attempt was written by {found.signer}, not the hub"
        )


async def append_unchained(
    conn: Conn, records: Sequence[AccessRecord], signer: RecordSigner | None = None
) -> tuple[list[AccessRecord], list[AccessRecord]]:
    """Write ``records`` without a place in their chains, all or none (in the caller's
    transaction, when one is open).

    No chain lock and no read of a chain's head: one statement inserts them all, each with the
    hash of its content and its writer's signature over that hash; the unique (keeper, attempt)
    key makes a retried attempt find its record instead of writing a second. The keeper's
    chainer (:func:`chain_pending`) gives them their places behind. Returns (every record,
    those newly written), like :func:`append`.
    """
    [written], new = await append_unchained_many(conn, [(records, signer)])
    return written, new


async def append_unchained_many(
    conn: Conn, calls: Sequence[tuple[Sequence[AccessRecord], RecordSigner | None]]
) -> tuple[list[list[AccessRecord]], list[AccessRecord]]:
    """:func:`append_unchained` for several writers' calls at once: what each call gets back,
    and the records newly written. A call refused (:class:`PermissionError`) refuses them all,
    and nothing of them is written.

    Outside a transaction, the usual case (no record of these attempts there yet) is one
    statement that writes every record or none (a record already there fails it whole): no
    ``BEGIN`` and ``COMMIT`` around it. Then, or when the caller's transaction is open, the
    records already there are read and compared (a retried attempt finds its record; the
    requester's record in another's hand is refused) inside a transaction, so a refusal still
    leaves nothing of the calls written."""
    now = dt.datetime.now(dt.UTC)
    rows: dict[tuple[str, str], AccessRecord] = {}
    for records, signer in calls:
        for record in records:
            if signer is not None and not may_write(signer.party, record.keeper):
                raise PermissionError(f"{signer.party} may not write {record.keeper}'s records")
            key = (record.keeper, record.attempt_key)
            if key in rows:
                continue
            # Its entry hash covers neither its place nor its link: only the time stamped here
            # changes what is hashed (one copy of the record made, not two).
            digest = _entry_hash_of({**record.__dict__, "recorded_at": now})
            rows[key] = record.model_copy(
                update={
                    "chain_seq": None,
                    "prev_hash": None,
                    "record_hash": None,
                    "recorded_at": now,
                    "chained_by": None,
                    "link_signature": None,
                    "link_from": None,
                    "entry_hash": digest,
                    "signer": None if signer is None else signer.party,
                    "signature": None
                    if signer is None
                    else base64.b64encode(
                        signer.key.sign(_entry_message(record.keeper, digest))
                    ).decode(),
                }
            )
    ordered = [rows[k] for k in sorted(rows)]  # one order for every writer: no deadlock
    given = _ROWS.dump_json(ordered).decode()
    if not conn.is_in_transaction():
        try:
            await conn.execute(_insert_unchained(on_conflict=""), given)
        except asyncpg.UniqueViolationError:  # an attempt recorded already: compare, below
            async with conn.transaction():
                return await _append_unchained_checked(conn, calls, rows, ordered, given)
        return [[rows[(r.keeper, r.attempt_key)] for r in records] for records, _ in calls], ordered
    return await _append_unchained_checked(conn, calls, rows, ordered, given)


def _insert_unchained(*, on_conflict: str) -> str:
    columns = ", ".join(_COLUMNS)
    # A chain started here goes into the keeper registry with its first record, so it cannot
    # vanish unseen even before its first link.
    return (
        "WITH given AS (SELECT * FROM jsonb_populate_recordset("
        "NULL::records.access_records, $1::text::jsonb)),"
        " registered AS (INSERT INTO records.keepers (keeper)"
        " SELECT DISTINCT keeper FROM given ON CONFLICT DO NOTHING)"
        f" INSERT INTO records.access_records ({columns}) SELECT {columns} FROM given"
        f"{on_conflict}"
    )


async def _append_unchained_checked(
    conn: Conn,
    calls: Sequence[tuple[Sequence[AccessRecord], RecordSigner | None]],
    rows: dict[tuple[str, str], AccessRecord],
    ordered: list[AccessRecord],
    given: str,
) -> tuple[list[list[AccessRecord]], list[AccessRecord]]:
    inserted = {
        (r["keeper"], r["attempt_key"])
        for r in await conn.fetch(
            _insert_unchained(
                on_conflict=" ON CONFLICT (keeper, attempt_key) DO NOTHING"
                " RETURNING keeper, attempt_key"
            ),
            given,
        )
    }
    known: dict[tuple[str, str], AccessRecord] = {}
    missing = [k for k in rows if k not in inserted]
    if missing:
        for row in await conn.fetch(
            "SELECT a.* FROM records.access_records a"
            " JOIN unnest($1::text[], $2::text[]) AS k(keeper, attempt_key)"
            " ON a.keeper = k.keeper AND a.attempt_key = k.attempt_key",
            [k for k, _ in missing],
            [a for _, a in missing],
        ):
            stored = _from_row(row)
            known[(stored.keeper, stored.attempt_key)] = stored
    answers: list[list[AccessRecord]] = []
    for records, signer in calls:
        for r in records:
            there = known.get((r.keeper, r.attempt_key))
            if there is not None:
                _refuse_overwrite(there, r, there.keeper, signer)
        answers.append(
            [
                known.get((r.keeper, r.attempt_key)) or rows[(r.keeper, r.attempt_key)]
                for r in records
            ]
        )
    new = [r for r in ordered if (r.keeper, r.attempt_key) in inserted]
    return answers, new


async def chain_pending(conn: Conn, signer: RecordSigner, *, limit: int = 5000) -> int:
    """Give up to ``limit`` of the unchained records of ``signer``'s own chain their places, in
    the order they were stored, inside the caller's transaction; return how many.

    Under the chain's lock (the one :func:`append` takes): read the head, link each record to
    the one before, sign the batch once at its last link (:func:`_batch_message`), and set
    them all in one statement. The database allows a record this one change, once (migrations
    0044, 0067). A chainer never waits for the lock: held by another transaction (another
    worker of the keeper chaining, an inline writer, or the keeper's own database role holding
    it open), nothing is linked now (0 is returned) and the next pass tries again, so a party
    holding its own chain's lock stalls no one else's."""
    keeper = signer.party
    if not may_chain(signer.party, keeper):  # pragma: no cover - the party is the keeper
        raise PermissionError(f"{signer.party} may not chain {keeper}'s records")
    if not conn.is_in_transaction():  # the lock must last until the links are set
        raise RuntimeError("chain_pending runs inside the caller's transaction")
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction goes on
            if not await lock_chain(conn, keeper, register=False, nowait=True):
                # Not registered: no record of it was written unchained (they register it as
                # they are written), so there is nothing to chain, unless the registry lost
                # its row.
                if not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM records.access_records WHERE keeper = $1"
                    " AND chain_seq IS NULL)",
                    keeper,
                ):
                    return 0
                await lock_chain(conn, keeper, nowait=True)
    except asyncpg.LockNotAvailableError:
        return 0
    pending = await conn.fetch(
        "SELECT * FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL"
        " ORDER BY id LIMIT $2",
        keeper,
        limit,
    )
    if not pending:
        return 0
    last = await conn.fetchrow(
        "SELECT chain_seq, record_hash FROM records.access_records WHERE keeper = $1"
        " AND chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
        keeper,
    )
    seq, prev = (last["chain_seq"], last["record_hash"]) if last else (0, GENESIS)
    first = seq + 1
    ids: list[int] = []
    seqs: list[int] = []
    prevs: list[str] = []
    digests: list[str] = []
    for row in pending:
        seq += 1
        # The stored values as they are (no model built: the chainer's time is per record).
        digest = _hash_of({**dict(row.items()), "chain_seq": seq, "prev_hash": prev})
        ids.append(row["id"])
        seqs.append(seq)
        prevs.append(prev)
        digests.append(digest)
        prev = digest
    # One signature for the batch, at its last link: that link's hash covers every one before
    # it, and the signature names where the batch began, so a link someone else set before it
    # is not taken as the keeper's (migration 0067).
    signature = base64.b64encode(signer.key.sign(_batch_message(keeper, first, seq, prev))).decode()
    status = await conn.execute(
        "UPDATE records.access_records a SET chain_seq = u.seq, prev_hash = u.prev,"
        " record_hash = u.digest, chained_by = $1,"
        " link_signature = CASE WHEN u.seq = $6 THEN $7 END,"
        " link_from = CASE WHEN u.seq = $6 THEN $8::bigint END"
        " FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[])"
        " AS u(id, seq, prev, digest)"
        " WHERE a.id = u.id AND a.chain_seq IS NULL",
        signer.party,
        ids,
        seqs,
        prevs,
        digests,
        seq,
        signature,
        first,
    )
    if status != f"UPDATE {len(ids)}":  # under the lock, no other chainer: cannot happen
        raise RuntimeError(f"chaining {keeper}'s records: {status}, expected {len(ids)}")
    return len(ids)


async def write(
    pool: asyncpg.Pool,
    *records: AccessRecord,
    signer: RecordSigner | None = None,
    deferred: bool = False,
) -> list[AccessRecord]:
    """Append each record to its keeper's chain unless its attempt is already recorded there.

    All of them or none: the hub writes the requester's and its own record together. Many
    records in one call are written as one batch (a few round trips per keeper, not per record).
    ``signer`` signs each new record: :func:`verify` refuses a record no entitled party signed
    once a chain holds signed records. ``deferred``: written unchained, in one round trip and
    without the chain's lock (:func:`append_unchained`); the keeper's chainer links them.
    """
    async with pool.acquire() as conn:
        if deferred:  # all or none in one statement, or in a transaction of its own
            written, new = await append_unchained(conn, records, signer)
        else:
            async with conn.transaction():
                written, new = await append(conn, records, signer)
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
    with_children: bool = False,
) -> list[AccessRecord]:
    """Records matching every given filter, in the order they were written.

    ``with_children``: ``workflow_id`` and ``bpf`` also match the records of the child flows
    that ran for that flow or BPF (a one-stop procedure's linkages sit under its children)."""
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
            if with_children and column in ("bpf", "workflow_id"):
                conds.append(f"({column} = ${len(args)} OR parent_{column} = ${len(args)})")
            else:
                conds.append(f"{column} = ${len(args)}")
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    args.append(limit)
    rows = await pool.fetch(
        f"SELECT * FROM records.access_records {where} ORDER BY id LIMIT ${len(args)}", *args
    )
    return [_from_row(r) for r in rows]
