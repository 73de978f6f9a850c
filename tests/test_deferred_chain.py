"""Records written unchained and chained behind (``records_chaining = deferred``, issue #16).

Each test works on a probe org's chain of its own (keys the hub registered), or links what it
leaves on a shared chain, so the session's chains stay intact for the other tests.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid

import asyncpg
import pytest
from temporalio.client import Client

from renkei.app.citizen import records_for_subject
from renkei.kernel import keys, parties, records
from renkei.kernel.db import create_pool, party_role
from renkei.kernel.records._chain import _link_message
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist

from .helpers import access_record, child_rearing, hub_public, pick, sdk, undone_as_owner, workers


async def _party(pool: asyncpg.Pool, settings: Settings) -> records.RecordSigner:
    """A probe org with keys the hub registered."""
    name = f"probe-{uuid.uuid4().hex[:8]}"
    own = keys.OrgKeys(
        org=name,
        signing_key=keys.new_keys().signing_key,
        codec=keys.load(settings).codec,
        hub_signing="",
    )
    await parties.register(pool, keys.load(settings).signer(), own.public(name))
    return records.RecordSigner(name, own.signer())


def _hub(settings: Settings) -> records.RecordSigner:
    return records.RecordSigner(records.HUB, keys.load(settings).signer())


async def _problems(
    pool: asyncpg.Pool, settings: Settings, keeper: str, **kw: dt.timedelta
) -> list[str]:
    found = await records.verify(pool, keys.load(settings).signer(), [keeper], **kw)
    return [b.problem for b in found.breaks]


async def _tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Change records behind the application's back, as a database administrator could."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(sql, *args)


async def _chain_all(pool: asyncpg.Pool, signer: records.RecordSigner) -> int:
    return await records.Chainer(pool, signer).run_once()


async def _seqs(pool: asyncpg.Pool, keeper: str) -> list[int | None]:
    return [r.chain_seq for r in await records.query(pool, keeper=keeper)]


async def test_a_deferred_record_is_written_once_shown_at_once_and_chained_behind(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    own = await _party(pool, settings)
    keeper = own.party
    attempts = [access_record(keeper, i, attempt_key=f"{uuid.uuid4()}") for i in range(1, 6)]
    # Every attempt written three times at once (a retried activity racing its first try).
    await asyncio.gather(*(records.write(pool, r, signer=own, deferred=True) for r in attempts * 3))
    shown = await records.query(pool, keeper=keeper)
    assert sorted(r.attempt_key for r in shown) == sorted(r.attempt_key for r in attempts)
    assert all(r.chain_seq is None and r.entry_hash and r.signer == keeper for r in shown)
    # Written, not yet chained: counted, not reported, until the bound; then reported.
    assert await _problems(pool, settings, keeper) == []
    late = await _problems(pool, settings, keeper, unchained_for=dt.timedelta(0))
    assert late and "still not chained" in late[0] and f"{keeper}'s chainer" in late[0]
    # The keeper's chainer links them, in the order they were stored, and signs each link.
    assert await _chain_all(pool, own) == 5
    assert await _seqs(pool, keeper) == [1, 2, 3, 4, 5]
    assert await _problems(pool, settings, keeper, unchained_for=dt.timedelta(0)) == []
    # A retry after chaining gets the chained record back and writes nothing.
    [again] = await records.write(pool, attempts[2], signer=own, deferred=True)
    places = {r.attempt_key: r.chain_seq for r in await records.query(pool, keeper=keeper)}
    assert again.chain_seq == places[attempts[2].attempt_key] and again.chained_by == keeper
    assert await _chain_all(pool, own) == 0
    # The chain's head is there for witnesses, and the keeper registry has the chain.
    made = await records.checkpoint(pool, _hub(settings).key)
    assert any(c.keeper == keeper and c.chain_seq == 5 for c in made)
    assert await pool.fetchval("SELECT count(*) FROM records.keepers WHERE keeper = $1", keeper)
    assert await _problems(pool, settings, keeper) == []


async def test_concurrent_writers_and_a_running_chainer_leave_one_gapless_chain(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Eight writers at once, deferred and inline mixed, while the chainer runs: every attempt
    once, positions 1..n without gap or repeat, and the chain verifies."""
    own = await _party(pool, settings)
    keeper = own.party

    async def writer(w: int) -> None:
        for i in range(25):
            r = access_record(keeper, i, attempt_key=f"w{w}/{i}")
            await records.write(pool, r, signer=own, deferred=w != 0)

    async with records.Chainer(pool, own, interval=0.01):
        await asyncio.gather(*(writer(w) for w in range(8)))
    # Leaving the chainer links what was still waiting.
    seqs = await _seqs(pool, keeper)
    assert sorted(s for s in seqs if s is not None) == list(range(1, 201))
    assert await _problems(pool, settings, keeper, unchained_for=dt.timedelta(0)) == []


async def test_verify_finds_a_changed_deleted_or_forged_deferred_record(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    own = await _party(pool, settings)
    keeper = own.party
    for i in range(1, 4):
        r = access_record(keeper, i, attempt_key=f"a{i}")
        await records.write(pool, r, signer=own, deferred=True)
    # Changed before it was chained: its writer's signature no longer covers it.
    await _tamper(
        pool,
        "UPDATE records.access_records SET outcome = 'denied' WHERE keeper = $1"
        " AND attempt_key = 'a2'",
        keeper,
    )
    assert await _problems(pool, settings, keeper) == [
        "an unchained record: its content differs from the hash its writer signed"
    ]
    # Chained as it is now, it still is not what its writer signed.
    await _chain_all(pool, own)
    assert await _problems(pool, settings, keeper) == [
        "its content differs from the hash its writer signed"
    ]

    other = await _party(pool, settings)
    await _write(pool, other, 1, 4, "b")
    await _chain_all(pool, other)
    await _tamper(
        pool,
        "UPDATE records.access_records SET reason = 'x' WHERE keeper = $1 AND chain_seq = 2",
        other.party,
    )
    assert await _problems(pool, settings, other.party) == ["its content differs from its hash"]

    third = await _party(pool, settings)
    await _write(pool, third, 1, 3, "c")
    await _chain_all(pool, third)
    await _tamper(
        pool, "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq = 2", third.party
    )
    assert await _problems(pool, settings, third.party) == ["record 2 is missing"]

    # One written in another's name (a key the hub did not register for it) is reported,
    # chained or not.
    fourth = await _party(pool, settings)
    thief = records.RecordSigner(fourth.party, keys.new_keys().signer())
    await records.write(
        pool, access_record(fourth.party, 1, attempt_key="d1"), signer=thief, deferred=True
    )
    assert await _problems(pool, settings, fourth.party) == [
        f"an unchained record: its signature is not {fourth.party}'s"
    ]


async def test_only_the_keeper_links_its_chain_and_only_once(
    base_settings: Settings, pool: asyncpg.Pool, settings: Settings
) -> None:
    own = await _party(pool, settings)
    keeper = own.party
    r = access_record(keeper, 1, attempt_key="e1")
    await records.write(pool, r, signer=own, deferred=True)
    # The hub links an org's chain (the application's role may write the columns): the link is
    # not the keeper's, and verify says so.
    hub = _hub(settings)
    row = await pool.fetchrow(
        "SELECT * FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL", keeper
    )
    linked = records.AccessRecord(**{k: row[k] for k in records.AccessRecord.model_fields})
    linked = linked.model_copy(update={"chain_seq": 1, "prev_hash": records.GENESIS})
    digest = records.record_hash(linked)
    signature = base64.b64encode(hub.key.sign(_link_message(keeper, 1, digest))).decode()
    await pool.execute(
        "UPDATE records.access_records SET chain_seq = 1, prev_hash = $2, record_hash = $3,"
        " chained_by = 'hub', link_signature = $4 WHERE id = $1",
        row["id"],
        records.GENESIS,
        digest,
        signature,
    )
    assert await _problems(pool, settings, keeper) == [
        f"linked by 'hub', who may not chain {keeper}'s records"
    ]
    # Once linked, a record changes no more: not its place, not its content, even for the owner.
    for sql in (
        "UPDATE records.access_records SET chain_seq = 7 WHERE keeper = $1",
        "UPDATE records.access_records SET outcome = 'denied' WHERE keeper = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(sql, keeper)
    # Nor may linking carry a change of content along.
    await records.write(pool, access_record(keeper, 2, attempt_key="e2"), signer=own, deferred=True)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(
                "UPDATE records.access_records SET chain_seq = 2, prev_hash = 'p',"
                " record_hash = 'h', chained_by = $1, link_signature = 's',"
                " outcome = 'denied' WHERE keeper = $1 AND chain_seq IS NULL",
                keeper,
            )
    # An org's own role links its own chain only: the hub's records are not even visible to it.
    assert base_settings.database_url
    agency = await create_pool(
        base_settings.database_url, max_size=1, role=party_role("city-minato")
    )
    try:
        minato = records.RecordSigner(
            "city-minato", keys.load_org(settings, "city-minato").signer()
        )
        mine = access_record(
            "city-minato", 1, attempt_key=f"own/{uuid.uuid4()}", provider="city-minato"
        )
        await records.write(agency, mine, signer=minato, deferred=True)
        assert await records.Chainer(agency, minato).run_once() >= 1
        status = await agency.execute(
            "UPDATE records.access_records SET chained_by = 'city-minato'"
            " WHERE keeper = 'hub' AND chain_seq IS NULL"
        )
        assert status == "UPDATE 0"
    finally:
        await agency.close()
    assert await _problems(pool, settings, "city-minato") == []


async def _write(
    pool: asyncpg.Pool, own: records.RecordSigner, first: int, last: int, tag: str
) -> None:
    """Records ``first`` to ``last`` of ``own``'s chain, written unchained (attempts tagged)."""
    for i in range(first, last + 1):
        r = access_record(own.party, i, attempt_key=f"{tag}{i}")
        await records.write(pool, r, signer=own, deferred=True)


async def _breaks(pool: asyncpg.Pool, settings: Settings, keeper: str) -> list[tuple[int, str]]:
    """Where verify finds ``keeper``'s chain broken, and why."""
    found = await records.verify(pool, keys.load(settings).signer(), [keeper])
    return [(b.chain_seq, b.problem) for b in found.breaks]


async def _links(pool: asyncpg.Pool, keeper: str) -> list[tuple[int, bool, int | None]]:
    """Each chained record's place, whether its link is signed, and where its batch began."""
    return [
        (r["chain_seq"], r["link_signature"] is not None, r["link_from"])
        for r in await pool.fetch(
            "SELECT chain_seq, link_signature, link_from FROM records.access_records"
            " WHERE keeper = $1 AND chain_seq IS NOT NULL ORDER BY chain_seq",
            keeper,
        )
    ]


async def _link_next(
    pool: asyncpg.Pool,
    keeper: str,
    *,
    signature: str | None = None,
    link_from: int | None = None,
    at: int | None = None,
) -> int:
    """Link the keeper's next waiting record as ``keeper``, with the place (or place ``at``) and
    hash its own chainer would give it, but not by its chainer: as the application's database
    role may (it holds the grant on the chain columns). Return the place."""
    head = await pool.fetchrow(
        "SELECT chain_seq, record_hash FROM records.access_records WHERE keeper = $1"
        " AND chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
        keeper,
    )
    seq, prev = (head["chain_seq"] + 1, head["record_hash"]) if head else (1, records.GENESIS)
    seq = seq if at is None else at
    row = await pool.fetchrow(
        "SELECT * FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL"
        " ORDER BY id LIMIT 1",
        keeper,
    )
    linked = records.AccessRecord(**{k: row[k] for k in records.AccessRecord.model_fields})
    digest = records.record_hash(linked.model_copy(update={"chain_seq": seq, "prev_hash": prev}))
    await pool.execute(
        "UPDATE records.access_records SET chain_seq = $2, prev_hash = $3, record_hash = $4,"
        " chained_by = keeper, link_signature = $5, link_from = $6 WHERE id = $1",
        row["id"],
        seq,
        prev,
        digest,
        signature,
        link_from,
    )
    return seq


async def test_a_chainer_signs_each_batch_once_at_its_last_link(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """One signature a batch (issue #16): the last link names where its batch began, the links
    before it carry none, and the chain verifies."""
    own = await _party(pool, settings)
    await _write(pool, own, 1, 5, "f")
    assert await _chain_all(pool, own) == 5
    await _write(pool, own, 6, 8, "f")
    assert await _chain_all(pool, own) == 3
    assert await _links(pool, own.party) == [
        (1, False, None),
        (2, False, None),
        (3, False, None),
        (4, False, None),
        (5, True, 1),
        (6, False, None),
        (7, False, None),
        (8, True, 6),
    ]
    assert await _problems(pool, settings, own.party, unchained_for=dt.timedelta(0)) == []


async def test_a_link_no_batch_of_the_keepers_covers_is_reported(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The application's role links an org's waiting records in the org's name without its
    signature, ahead of the org's chainer: reported where it did, also after the org's chainer
    has gone on and signed its own batch behind it (whose hash covers the foreign links)."""
    own = await _party(pool, settings)
    await _write(pool, own, 1, 4, "g")
    assert await _chain_all(pool, own) == 4  # a batch of its own first: 1..4
    await _write(pool, own, 5, 8, "g")
    assert await _link_next(pool, own.party) == 5
    assert await _link_next(pool, own.party) == 6
    # At the chain's end: linked, and no signature of the keeper's after it.
    assert await _problems(pool, settings, own.party) == [records_uncovered()]
    # The keeper's chainer goes on after them (its batch: 7..8, signed from 7).
    assert await _chain_all(pool, own) == 2
    assert (await _links(pool, own.party))[-1] == (8, True, 7)
    assert await _breaks(pool, settings, own.party) == [(5, records_uncovered())]

    # A batch's signature taken from another link, or its batch widened, holds for nothing.
    other = await _party(pool, settings)
    await _write(pool, other, 1, 3, "h")
    assert await _chain_all(pool, other) == 3
    [signed] = await pool.fetch(
        "SELECT link_signature FROM records.access_records WHERE keeper = $1"
        " AND link_signature IS NOT NULL",
        other.party,
    )
    await _write(pool, other, 4, 5, "h")
    await _link_next(pool, other.party)
    await _link_next(pool, other.party, signature=signed["link_signature"], link_from=1)
    assert await _problems(pool, settings, other.party) == [
        f"its link: its signature is not {other.party}'s"
    ]


async def test_links_signed_one_by_one_then_batches_verify(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A chain linked one by one by a chainer from before (each link signed on its own), then
    in batches: it verifies, and a legacy link whose signature is another's is still reported."""
    own = await _party(pool, settings)
    await _write(pool, own, 1, 5, "l")
    for seq in (1, 2):
        row = await pool.fetchrow(
            "SELECT * FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL"
            " ORDER BY id LIMIT 1",
            own.party,
        )
        head = await pool.fetchval(
            "SELECT record_hash FROM records.access_records WHERE keeper = $1 AND chain_seq = $2",
            own.party,
            seq - 1,
        )
        linked = records.AccessRecord(**{k: row[k] for k in records.AccessRecord.model_fields})
        digest = records.record_hash(
            linked.model_copy(update={"chain_seq": seq, "prev_hash": head or records.GENESIS})
        )
        signature = base64.b64encode(own.key.sign(_link_message(own.party, seq, digest))).decode()
        assert await _link_next(pool, own.party, signature=signature) == seq
    assert await _chain_all(pool, own) == 3
    assert await _links(pool, own.party) == [
        (1, True, None),
        (2, True, None),
        (3, False, None),
        (4, False, None),
        (5, True, 3),
    ]
    assert await _problems(pool, settings, own.party, unchained_for=dt.timedelta(0)) == []

    other = await _party(pool, settings)
    await records.write(
        pool, access_record(other.party, 1, attempt_key="l1"), signer=other, deferred=True
    )
    forged = base64.b64encode(own.key.sign(b"renkei/link/v1|x|1|y")).decode()
    await _link_next(pool, other.party, signature=forged)
    assert await _problems(pool, settings, other.party) == [
        f"its link: its signature is not {other.party}'s"
    ]


async def test_a_batchs_signature_removed_or_moved_is_reported(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A database administrator (triggers off) takes a batch's signature away, or names an
    earlier start for it to cover links someone else set: the links are reported."""
    own = await _party(pool, settings)
    await _write(pool, own, 1, 3, "k")
    assert await _chain_all(pool, own) == 3
    await _tamper(
        pool,
        "UPDATE records.access_records SET link_signature = NULL, link_from = NULL"
        " WHERE keeper = $1 AND chain_seq = 3",
        own.party,
    )
    assert await _breaks(pool, settings, own.party) == [(1, records_uncovered())]

    # The batch's last link removed whole: the links before it are left with no signature.
    cut = await _party(pool, settings)
    await _write(pool, cut, 1, 3, "c")
    assert await _chain_all(pool, cut) == 3
    await _tamper(
        pool, "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq = 3", cut.party
    )
    assert await _breaks(pool, settings, cut.party) == [(1, records_uncovered())]

    other = await _party(pool, settings)
    await _write(pool, other, 1, 2, "m")
    assert await _link_next(pool, other.party) == 1
    assert await _chain_all(pool, other) == 1
    assert await _links(pool, other.party) == [(1, False, None), (2, True, 2)]
    await _tamper(
        pool,
        "UPDATE records.access_records SET link_from = 1 WHERE keeper = $1 AND chain_seq = 2",
        other.party,
    )
    assert await _problems(pool, settings, other.party) == [
        f"its link: its signature is not {other.party}'s"
    ]


async def _insert(conn: asyncpg.Connection | asyncpg.Pool, record: records.AccessRecord) -> None:
    """Insert ``record`` as it is, every column as given (not through the module)."""
    from renkei.kernel.records._chain import _COLUMNS

    placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
    await conn.execute(
        f"INSERT INTO records.access_records ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
        *(getattr(record, c) for c in _COLUMNS),
    )


async def test_a_record_chained_as_written_ends_no_batch_of_links_someone_else_set(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The hub (its key, the application's role) links an org's waiting records in the org's
    name, then writes a record of its own into the org's chain, chained as written and carrying
    a batch's end from there: the links stay reported, and the database refuses the carrier.
    A database administrator who drops the table's checks gets no further with verify."""
    from renkei.kernel.records._witness import _verify_chain

    own = await _party(pool, settings)
    hub = _hub(settings)
    for i in range(1, 5):
        r = access_record(own.party, i, attempt_key=f"n{i}")
        await records.write(pool, r, signer=own, deferred=True)
        if i == 2:
            assert await _chain_all(pool, own) == 2
    assert await _link_next(pool, own.party) == 3
    assert await _link_next(pool, own.party) == 4
    carrier = access_record(own.party, 5, attempt_key="n5").model_copy(
        update={
            "chained_by": own.party,
            "link_signature": "x",
            "link_from": 3,
            "recorded_at": dt.datetime.now(dt.UTC),
        }
    )
    head = await pool.fetchval(
        "SELECT record_hash FROM records.access_records WHERE keeper = $1 AND chain_seq = 4",
        own.party,
    )
    placed = carrier.model_copy(update={"chain_seq": 5, "prev_hash": head})
    digest = records.record_hash(placed)
    placed = placed.model_copy(
        update={
            "record_hash": digest,
            "signer": "hub",
            "signature": base64.b64encode(
                hub.key.sign(f"renkei/record/v1|{own.party}|5|{digest}".encode())
            ).decode(),
        }
    )
    # Inserted as it is, signed by the hub: refused.
    with pytest.raises(asyncpg.CheckViolationError):
        await _insert(pool, placed)
    # A database administrator drops the checks (in a transaction rolled back after): verify
    # reports the carrier.
    async with undone_as_owner(pool) as conn:
        await conn.execute("ALTER TABLE records.access_records DROP CONSTRAINT linked_once_placed")
        await _insert(conn, placed)
        ring = await records.keyring(conn, hub.key.public_key())
        _, broken = await _verify_chain(conn, own.party, True, [], ring, None)
        assert broken is not None
        assert (broken.chain_seq, broken.problem) == (
            5,
            "chained as written, yet it carries a chainer's link",
        )
    # Written through the module: chained as written, it carries no link whatever it is given,
    # and ends no batch.
    [written] = await records.write(pool, carrier, signer=hub)
    assert (written.chain_seq, written.chained_by, written.link_from) == (5, None, None)
    assert await _breaks(pool, settings, own.party) == [(3, records_uncovered())]


async def test_a_row_waiting_for_its_place_carries_no_link(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A row inserted unchained with a chainer's name could never be linked by its chainer (a
    row changes only from unlinked to linked), and the chainer takes rows in order: it would
    stall the chain for good. The database refuses it; the chain goes on."""
    own = await _party(pool, settings)
    poisoned = access_record(own.party, 1, attempt_key="p1").model_copy(
        update={"entry_hash": "e", "chained_by": own.party, "recorded_at": dt.datetime.now(dt.UTC)}
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await _insert(pool, poisoned)
    await records.write(
        pool, access_record(own.party, 1, attempt_key="p1"), signer=own, deferred=True
    )
    assert await _chain_all(pool, own) == 1


# The columns a link sets (and the one the database stamps as it links).
CHAIN_COLUMNS = frozenset(
    {"chain_seq", "prev_hash", "record_hash", "chained_by", "link_signature", "link_from"}
)


# A link of a chain's first place by hand, its WHERE clause to add ($1: the keeper).
LINK_FIRST = (
    "UPDATE records.access_records SET chain_seq = 1, prev_hash = 'p', record_hash = 'h',"
    " chained_by = $1, link_signature = 's', link_from = 1"
)


async def _waiting_party(pool: asyncpg.Pool, settings: Settings) -> records.RecordSigner:
    """A probe org with one record of its own waiting for its place."""
    own = await _party(pool, settings)
    record = access_record(own.party, 1, attempt_key=f"w/{uuid.uuid4()}")
    await records.write(pool, record, signer=own, deferred=True)
    return own


def _other_values(column: str, data_type: str, nullable: bool, value: object) -> list[str]:
    """SQL for other values of ``column`` than ``value``: another of its type, and NULL (or,
    from NULL, a value)."""
    other = {
        "text": (f"{column} || 'x'", "'x'"),
        "bigint": (f"{column} + 1", "1"),
        "integer": (f"{column} + 1", "1"),
        "timestamp with time zone": (f"{column} + interval '1 microsecond'", "now()"),
    }[data_type]  # a column of another type: say here how it changes
    if value is None:
        return [other[1]]
    return [other[0], "NULL"] if nullable else [other[0]]


async def test_a_link_carries_no_change_of_any_other_column(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A link may set the chain columns of a waiting record, once, and nothing else of it: for
    every other column the table has (read from the catalog, so one added later is tried too),
    a link that also changes it to another value, to NULL, or from NULL to a value, is refused,
    even to the database's owner. The same link setting that column to what it holds is taken.
    """
    own = await _waiting_party(pool, settings)
    row = await pool.fetchrow(
        "SELECT * FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL", own.party
    )
    columns = await pool.fetch(
        "SELECT column_name, data_type, is_nullable = 'YES' AS nullable"
        " FROM information_schema.columns"
        " WHERE table_schema = 'records' AND table_name = 'access_records'"
    )
    others = [c for c in columns if c["column_name"] not in CHAIN_COLUMNS | {"chained_at"}]
    assert {c["column_name"] for c in columns} >= CHAIN_COLUMNS | {"outcome", "subject_code"}
    assert any(row[c["column_name"]] is None for c in others)  # from NULL is tried too
    link = LINK_FIRST
    tried = 0
    async with undone_as_owner(pool) as conn:
        for c in others:
            name = c["column_name"]
            for value in _other_values(name, c["data_type"], c["nullable"], row[name]):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    async with conn.transaction():
                        await conn.execute(
                            f"{link}, {name} = {value} WHERE id = $2", own.party, row["id"]
                        )
                tried += 1
            # The same value: no change, and the link is taken (then undone, for the next).
            same = conn.transaction()
            await same.start()
            status = await conn.execute(
                f"{link}, {name} = {name} WHERE id = $2", own.party, row["id"]
            )
            await same.rollback()
            assert status == "UPDATE 1", name
    assert tried > len(others)


async def test_no_search_path_changes_what_the_append_only_trigger_compares_or_stamps(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A session that can create in a schema puts its own `*=` for the table's row type (an
    exact match, which PostgreSQL would pick before the catalog's) and its own
    `clock_timestamp()` first on its search path: a link still carries no change of content,
    and its time is the database's."""
    own = await _waiting_party(pool, settings)
    link = LINK_FIRST
    async with undone_as_owner(pool) as conn:
        await conn.execute(
            "CREATE FUNCTION public.always(records.access_records, records.access_records)"
            " RETURNS boolean LANGUAGE sql AS 'SELECT true'"
        )
        await conn.execute(
            "CREATE OPERATOR public.*= (LEFTARG = records.access_records,"
            " RIGHTARG = records.access_records, FUNCTION = public.always)"
        )
        await conn.execute(
            "CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql"
            " AS $$SELECT '2020-01-01 00:00+00'::timestamptz$$"
        )
        await conn.execute("SET LOCAL search_path = public, pg_catalog")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            async with conn.transaction():
                await conn.execute(
                    f"{link}, outcome = 'denied' WHERE keeper = $1 AND chain_seq IS NULL",
                    own.party,
                )
        await conn.execute(f"{link} WHERE keeper = $1 AND chain_seq IS NULL", own.party)
        linked_at = await conn.fetchval(
            "SELECT chained_at FROM records.access_records WHERE keeper = $1", own.party
        )
        assert linked_at > dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)


async def test_every_function_of_renkeis_schemas_resolves_names_in_the_catalog_only(
    pool: asyncpg.Pool,
) -> None:
    """Each function in renkei's own schemas (a trigger's, a check's) pins its search path to
    the system catalog and renkei's schemas (which only their owner creates in), the session's
    temporary schema last if at all: a function a later migration replaced without it is found
    here, not by an attacker."""
    ours = {
        r["nspname"]
        for r in await pool.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema')"
            " AND nspname NOT LIKE 'pg\\_%'"
        )
    }
    assert {"records", "hub", "controls"} <= ours
    functions = await pool.fetch(
        "SELECT p.oid::regprocedure::text AS f, p.proconfig FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY($1)",
        sorted(ours),
    )
    assert len(functions) >= 10  # the query sees renkei's functions
    unpinned = []
    for row in functions:
        paths = [c for c in row["proconfig"] or [] if c.startswith("search_path=")]
        names = (
            [n.strip() for n in paths[0].removeprefix("search_path=").split(",")] if paths else []
        )
        if (
            not names
            or any(n not in ours | {"pg_catalog", "pg_temp"} for n in names)
            or ("pg_temp" in names and names[-1] != "pg_temp")
        ):
            unpinned.append((row["f"], paths))
    assert unpinned == []


async def test_a_batch_begins_where_its_signature_says(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """A batch's signature, even the keeper's, names the first link after the last one signed
    before it: a batch said to begin elsewhere is reported."""
    from renkei.kernel.records._chain import _batch_message

    own = await _party(pool, settings)
    for i in range(1, 4):
        r = access_record(own.party, i, attempt_key=f"q{i}")
        await records.write(pool, r, signer=own, deferred=True)
        if i == 2:
            assert await _chain_all(pool, own) == 2  # 1..2, signed from 1
    row = await pool.fetchrow(
        "SELECT * FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL", own.party
    )
    head = await pool.fetchval(
        "SELECT record_hash FROM records.access_records WHERE keeper = $1 AND chain_seq = 2",
        own.party,
    )
    linked = records.AccessRecord(**{k: row[k] for k in records.AccessRecord.model_fields})
    digest = records.record_hash(linked.model_copy(update={"chain_seq": 3, "prev_hash": head}))
    signature = base64.b64encode(own.key.sign(_batch_message(own.party, 1, 3, digest))).decode()
    assert await _link_next(pool, own.party, signature=signature, link_from=1) == 3
    assert await _problems(pool, settings, own.party) == [
        "its link names a batch that did not begin where it says"
    ]


LAST_PLACE = 2**63 - 1  # the last a bigint holds
GENESIS = records.GENESIS


async def test_a_place_far_ahead_is_refused_and_the_chain_goes_on(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The application's role (it may set every keeper's chain columns) links an org's waiting
    record at the last place a bigint holds, or past a place never given, or inserts a record
    chained there; the hub's role appends an outcome there. Each would leave the chain's next
    place out of range or out of reach, and its chainer and writers failing for good: the
    database refuses each, and the chain goes on."""
    own = await _party(pool, settings)
    await _write(pool, own, 1, 2, "z")
    assert await _chain_all(pool, own) == 2
    await _write(pool, own, 3, 4, "z")
    for place in (LAST_PLACE, 4):
        with pytest.raises(asyncpg.CheckViolationError, match=f"place {place} of {own.party}'s"):
            await _link_next(pool, own.party, at=place)
    # Nor by a statement that updates otherwise: in a writable CTE, or a MERGE.
    waiting = await pool.fetchval(
        "SELECT id FROM records.access_records WHERE keeper = $1 AND chain_seq IS NULL"
        " ORDER BY id LIMIT 1",
        own.party,
    )
    link = "chain_seq = $2, prev_hash = 'p', record_hash = 'h', chained_by = keeper"
    for sql in (
        f"WITH w AS (UPDATE records.access_records SET {link} WHERE id = $1 RETURNING id)"
        " SELECT count(*) FROM w",
        "MERGE INTO records.access_records a USING (SELECT $1::bigint AS id) s ON a.id = s.id"
        f" WHEN MATCHED THEN UPDATE SET {link}",
    ):
        with pytest.raises(asyncpg.CheckViolationError, match="one place at a time"):
            await pool.execute(sql, waiting, LAST_PLACE)
    far = access_record(own.party, 9, attempt_key="z9").model_copy(
        update={"recorded_at": dt.datetime.now(dt.UTC)}
    )
    placed = far.model_copy(update={"chain_seq": LAST_PLACE, "prev_hash": "0" * 64})
    placed = placed.model_copy(update={"record_hash": records.record_hash(placed)})
    with pytest.raises(asyncpg.CheckViolationError, match="grows one place at a time"):
        await _insert(pool, placed)
    for place in (LAST_PLACE, 0, -5):
        with pytest.raises(asyncpg.CheckViolationError, match="the outcomes' chain"):
            await pool.execute(
                "INSERT INTO records.attempt_outcomes (attempt_key, outcome, record_hash,"
                " chain_seq, prev_hash, outcome_hash, recorded_at, signer, signature)"
                " VALUES ($1, 'failed', 'h', $2, 'p', 'o', now(), 'hub', 's')",
                f"far-{uuid.uuid4()}",
                place,
            )
    # The keeper's chainer links what waits, a writer chains as written after it, and the
    # chain verifies.
    assert await _chain_all(pool, own) == 2
    [inline] = await records.write(pool, far, signer=own)
    assert inline.chain_seq == 5
    assert await _problems(pool, settings, own.party, unchained_for=dt.timedelta(0)) == []
    # The places the retention period empties at a chain's start (here the owner removes the
    # first, in a transaction rolled back after) are not filled again.
    again = far.model_copy(update={"attempt_key": "z0", "chain_seq": 1, "prev_hash": GENESIS})
    again = again.model_copy(update={"record_hash": records.record_hash(again)})
    async with undone_as_owner(pool) as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(
            "DELETE FROM records.access_records WHERE keeper = $1 AND chain_seq = 1", own.party
        )
        await conn.execute("SET LOCAL session_replication_role = origin")
        await conn.execute("SET LOCAL ROLE renkei_app")
        with pytest.raises(asyncpg.CheckViolationError, match=f"place 1 of {own.party}'s"):
            await _insert(conn, again)


def records_uncovered() -> str:
    return (
        "linked without a signature of its keeper's: no batch its keeper's chainer signed covers it"
    )


async def test_an_outcome_binds_to_a_hub_record_not_yet_chained(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The hub's record of an attempt, written unchained, gets its outcome before or after it
    is chained; the outcomes chain verifies either way."""
    hub = _hub(settings)
    attempt = f"wf-{uuid.uuid4()}/run/step"
    subject = uuid.uuid4()
    requester = await _party(pool, settings)  # a probe org's request: both sides the hub's
    side = access_record(
        records.HUB,
        1,
        attempt_key=attempt,
        requester=requester.party,
        outcome="denied",
        workflow_id=attempt,
        subject_code=str(subject),
    )
    theirs = side.model_copy(update={"keeper": requester.party, "subject_code": "CODE"})
    await records.write(pool, theirs, side, signer=hub, deferred=True)
    # The citizen sees it at once, chained or not.
    [seen] = await records_for_subject(pool, default_catalog(), subject, hub=hub_public(settings))
    assert seen.outcome == "denied" and seen.vouched  # its writer's signature holds unchained
    found = await records.record_outcome(pool, attempt, "denied", hub)
    assert found is not None
    await _chain_all(pool, hub)
    await _chain_all(pool, requester)
    assert await _problems(pool, settings, requester.party, unchained_for=dt.timedelta(0)) == []
    assert (
        found.record_hash
        == (await records.query(pool, keeper="hub", workflow_id=side.workflow_id))[0].entry_hash
    )
    async with pool.acquire() as conn, conn.transaction():
        ring = await records.keyring(conn, hub.key.public_key())
        assert await records.verify_outcomes(conn, ring) is None
    assert await _problems(pool, settings, records.HUB, unchained_for=dt.timedelta(0)) == []
    # The trigger the outcomes share with the access records refuses their owner a change too,
    # as append-only (it reads the chain columns of access records only).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE NONE")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(
                "UPDATE records.attempt_outcomes SET outcome = outcome WHERE attempt_key = $1",
                attempt,
            )


async def test_linkages_with_deferred_chaining_leave_one_chained_record_per_party_and_attempt(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    live_whitelist: LiveWhitelist,
) -> None:
    """A real flow through the hub's and the agencies' workers, records written unchained: once
    the workers stop (their chainers link what still waits), every attempt has one record with
    each party, each linked by its keeper, and every chain it touched verifies."""
    deferred = settings.model_copy(update={"records_chaining": "deferred"})
    household = pick(settings, lambda h: h.municipality == "city-minato")
    async with workers(client, pool, deferred, catalog, live_whitelist):
        handle = await sdk(client, deferred).start(child_rearing(deferred, household.members[0]))
        await handle.result()
    found = await records.query(pool, workflow_id=handle.id, with_children=True)
    assert found and all(r.entry_hash is not None for r in found)
    by_attempt: dict[str, list[str]] = {}
    for r in found:
        by_attempt.setdefault(r.attempt_key, []).append(r.keeper)
        assert r.chain_seq is not None and r.chained_by == r.keeper
    for keepers in by_attempt.values():
        assert sorted(keepers) == sorted(set(keepers)) and records.HUB in keepers
        assert len(keepers) == 3  # requester, hub, provider
    touched = sorted({r.keeper for r in found})
    result = await records.verify(
        pool, keys.load(settings).signer(), touched, unchained_for=dt.timedelta(0)
    )
    # Other tests of the session break chains on purpose (a requester's record removed behind
    # the hub's back shows as that requester's break, found from the hub's records).
    assert [b for b in result.breaks if b.keeper in touched] == []


async def test_a_group_writer_commits_concurrent_calls_together_each_all_or_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Forty calls at once, some repeating an attempt: one record per attempt, each call its
    own back, in fewer commits than calls. Then a group with one call refused (the requester's
    record of an attempt already there in another's hand): the others are written, the refused
    call writes nothing, not even its hub side."""
    own = await _party(pool, settings)
    hub = _hub(settings)
    group = records.GroupWriter(pool)
    calls = [access_record(own.party, i, attempt_key=f"g{i % 30}") for i in range(40)]
    results = await asyncio.gather(*(group.write(c, signer=own) for c in calls))
    assert 1 <= group.commits < 40
    stored = await records.query(pool, keeper=own.party)
    assert sorted(r.attempt_key for r in stored) == sorted(f"g{i}" for i in range(30))
    by_key = {r.attempt_key: r.entry_hash for r in stored}
    assert all(len(r) == 1 and r[0].entry_hash == by_key[r[0].attempt_key] for r in results)

    forged = f"wf-{uuid.uuid4()}/run/tax"
    theirs = access_record(own.party, 99, attempt_key=forged, provider="city-shibuya")
    await records.write(pool, theirs, signer=own, deferred=True)
    hub_side = access_record(
        records.HUB, 99, attempt_key=forged, requester=own.party, workflow_id=forged
    )
    more = [access_record(own.party, i, attempt_key=f"h{i}") for i in range(10)]
    outcome = await asyncio.gather(
        *(group.write(c, signer=own) for c in more[:5]),
        group.write(theirs, hub_side, signer=hub),
        *(group.write(c, signer=own) for c in more[5:]),
        return_exceptions=True,
    )
    assert isinstance(outcome[5], PermissionError) and "not the hub" in str(outcome[5])
    assert all(isinstance(r, list) for i, r in enumerate(outcome) if i != 5)
    assert not await records.query(pool, keeper=records.HUB, workflow_id=forged)
    assert len(await records.query(pool, keeper=own.party)) == 30 + 1 + 10
    await _chain_all(pool, own)
    problems = await _problems(pool, settings, own.party, unchained_for=dt.timedelta(0))
    assert problems == []


async def test_a_chain_written_unchained_is_in_the_keeper_registry_from_its_first_record(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Deleted whole before its first link (its records, behind the application's back), the
    chain is still missed: the registry took it with its first record."""
    own = await _party(pool, settings)
    await records.write(
        pool, access_record(own.party, 1, attempt_key="k1"), signer=own, deferred=True
    )
    await _tamper(pool, "DELETE FROM records.access_records WHERE keeper = $1", own.party)
    [problem] = await _problems(pool, settings, own.party)
    assert "the chain vanished" in problem


async def test_a_revoked_key_and_a_backdated_record_are_reported_when_written_unchained(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """What the holder of a revoked key writes after the revocation counts for nothing, waiting
    or linked (the database's clock decides when it was stored, and when it was linked); a
    record its writer dates an hour back is reported by that clock too."""
    from renkei.kernel.records._chain import _entry_message

    own = await _party(pool, settings)
    keeper = own.party
    await records.write(pool, access_record(keeper, 1, attempt_key="r1"), signer=own, deferred=True)
    await _chain_all(pool, own)
    assert await parties.revoke(pool, keys.load(settings).signer(), keeper, reason="key lost")
    assert await _problems(pool, settings, keeper) == []
    await records.write(pool, access_record(keeper, 2, attempt_key="r2"), signer=own, deferred=True)
    assert await _problems(pool, settings, keeper) == [
        f"an unchained record: signed with {keeper}'s key after it was revoked"
    ]
    await _chain_all(pool, own)
    assert await _problems(pool, settings, keeper) == [
        f"signed with {keeper}'s key after it was revoked"
    ]

    other = await _party(pool, settings)
    dated = access_record(
        other.party,
        1,
        attempt_key="b1",
        recorded_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    digest = records.entry_hash(dated)
    dated = dated.model_copy(
        update={
            "entry_hash": digest,
            "signer": other.party,
            "signature": base64.b64encode(
                other.key.sign(_entry_message(other.party, digest))
            ).decode(),
        }
    )
    await _insert(pool, dated)
    [problem] = await _problems(pool, settings, other.party)
    assert problem.startswith("an unchained record: dated ") and "by the database" in problem
    await _chain_all(pool, other)


async def test_an_org_that_only_asks_has_its_chain_linked_by_its_control_worker(
    client: Client, pool: asyncpg.Pool, settings: Settings
) -> None:
    """An org's chain holds the hub's records of its requests: with only its control worker
    running (no agency worker of its own), that worker links them, with the org's own key."""
    from .processes import worker

    deferred = settings.model_copy(update={"records_chaining": "deferred"})
    asked = access_record(
        "city-minato", 1, attempt_key=f"asked/{uuid.uuid4()}", provider="city-shibuya"
    )
    await records.write(pool, asked, signer=_hub(settings), deferred=True)

    async def place() -> tuple[int | None, str | None]:
        row = await pool.fetchrow(
            "SELECT chain_seq, chained_by FROM records.access_records"
            " WHERE keeper = 'city-minato' AND attempt_key = $1",
            asked.attempt_key,
        )
        assert row is not None
        return row["chain_seq"], row["chained_by"]

    assert await place() == (None, None)
    control = worker(deferred, client.service_client.config.target_host, "control", "city-minato")
    try:
        for _ in range(300):
            if (await place())[0] is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        control.stop()
    seq, by = await place()
    assert seq is not None and by == "city-minato", control.output
    assert await _problems(pool, settings, "city-minato") == []


async def test_one_process_chainers_look_once_and_link_each_partys_chain(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An all-in-one process's chainers (records.Chainers): one look for all its parties, then
    each party's waiting records linked by that party; one whose linking fails is left for the
    next pass, the others are linked."""
    a, b, idle = [await _party(pool, settings) for _ in range(3)]
    for signer, n in ((a, 2), (b, 3)):
        for i in range(n):
            record = access_record(signer.party, i + 1, attempt_key=f"k{i}")
            await records.write(pool, record, signer=signer, deferred=True)
    chainers = records.Chainers(pool, [a, b, idle])
    failing = chainers._chainers[a.party]

    async def broken() -> int:
        raise RuntimeError("its key is away")

    monkeypatch.setattr(failing, "link_batch", broken)
    assert await chainers.run_once() == 3
    assert await _seqs(pool, a.party) == [None, None] and await _seqs(pool, b.party) == [1, 2, 3]
    monkeypatch.undo()
    assert await chainers.run_once() == 2
    assert await _seqs(pool, a.party) == [1, 2]
    assert await chainers.run_once() == 0
    for party in (a.party, b.party):
        assert await _problems(pool, settings, party) == []


async def test_an_org_holding_its_own_chains_lock_stalls_no_other_chain(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """An org's database role may lock its own chain (its gate needs to): holding that lock
    open, it stalls the linking of no other chain, the hub's included, in a process that
    chains both (records.Chainers: never waits for a chain's lock); its own is linked once it
    lets go."""
    org = "city-minato"
    hub = _hub(settings)
    minato = records.RecordSigner(org, keys.load_org(settings, org).signer())
    mine = access_record(org, 1, attempt_key=f"held/{uuid.uuid4()}", provider=org)
    theirs = access_record(records.HUB, 1, attempt_key=f"held/{uuid.uuid4()}")
    await records.write(pool, mine, signer=minato, deferred=True)
    await records.write(pool, theirs, signer=hub, deferred=True)

    async def place(keeper: str, key: str) -> int | None:
        seq: int | None = await pool.fetchval(
            "SELECT chain_seq FROM records.access_records WHERE keeper = $1 AND attempt_key = $2",
            keeper,
            key,
        )
        return seq

    assert base_settings.database_url
    agency = await create_pool(base_settings.database_url, max_size=1, role=party_role(org))
    try:
        async with agency.acquire() as conn:
            held = conn.transaction()
            await held.start()
            assert await conn.fetchval(
                "SELECT 1 FROM records.keepers WHERE keeper = $1 FOR NO KEY UPDATE", org
            )
            chainers = records.Chainers(pool, [hub, minato])
            await asyncio.wait_for(chainers.run_once(), 10)  # a bound, not a measure
            assert await place(records.HUB, theirs.attempt_key) is not None
            assert await place(org, mine.attempt_key) is None
            await held.rollback()
        await chainers.run_once()
        assert await place(org, mine.attempt_key) is not None
    finally:
        await agency.close()


async def test_an_org_holding_a_record_open_under_the_hubs_next_attempt_stalls_no_one_else(
    pool: asyncpg.Pool, settings: Settings, base_settings: Settings
) -> None:
    """An org's role writes a record of its own chain under the attempt key the hub writes next
    (its own linkage's: it knows the workflow, run and step) and holds the transaction open.
    The hub's write of that linkage waits, alone: another requester's linkage, written by the
    same group writer after it, is written (the group's statement waits at most GROUP_WAIT, then
    each call goes on its own). Once the org lets go, the hub's write goes through."""
    hub = _hub(settings)
    org = "city-minato"
    minato = records.RecordSigner(org, keys.load_org(settings, org).signer())
    held, other = f"held/{uuid.uuid4()}", f"other/{uuid.uuid4()}"
    group = records.GroupWriter(pool, wait=0.5)
    assert base_settings.database_url
    agency = await create_pool(base_settings.database_url, max_size=1, role=party_role(org))
    try:
        async with agency.acquire() as conn:
            open_ = conn.transaction()
            await open_.start()
            await records.append_unchained(
                conn, [access_record(org, 1, attempt_key=held, provider=org)], minato
            )
            # the hub's two records of a linkage, the requester's and its own, alike
            asked = access_record(records.HUB, 1, attempt_key=held, requester=org, provider="jps")
            victim = asyncio.create_task(
                group.write(asked.model_copy(update={"keeper": org}), asked, signer=hub)
            )
            await asyncio.sleep(0.2)
            elsewhere = access_record(records.HUB, 2, attempt_key=other)
            bystander = await asyncio.wait_for(
                group.write(
                    elsewhere.model_copy(update={"keeper": "pref-tokyo"}), elsewhere, signer=hub
                ),
                30,  # a bound for a loaded machine, not a measure
            )
            assert {r.attempt_key for r in bystander} == {other} and not victim.done()
            await open_.rollback()
        written = await asyncio.wait_for(victim, 30)
        assert {(r.keeper, r.signer) for r in written} == {(org, "hub"), ("hub", "hub")}
    finally:
        await agency.close()
    await records.Chainer(pool, hub).run_once()


# Each table of chained records, and a row of it (beside the chain's first record, linked by
# hand) to try sizes with: every column but the id, as JSON.
SIZE_BOUNDED = ("access_records", "attempt_outcomes", "checkpoints")
LINKED = CHAIN_COLUMNS | {"chained_at"}  # what a waiting record has none of
TEXT_LIMIT = 8192  # bytes, each text column of them (migration 0071)


async def _refusal(
    conn: asyncpg.Connection, role: str, insert: str, row: dict[str, object]
) -> str | None:
    """Why ``role`` may not ``insert`` ``row`` (the constraint, or the error's class); None if
    it may (the row is taken back: only the test's transaction ever holds it)."""
    async with conn.transaction():
        await conn.execute(f'SET LOCAL ROLE "{role}"')
        try:
            async with conn.transaction():
                await conn.execute(insert, row)
                raise _Taken
        except _Taken:
            return None
        except asyncpg.CheckViolationError as err:
            return err.constraint_name or "check"
        except asyncpg.PostgresError as err:
            return type(err).__name__
        finally:
            await conn.execute("SET LOCAL ROLE NONE")


class _Taken(Exception):
    """Raised inside a savepoint to take back a row that was stored."""


def _row_of(table: str, record: dict[str, object], next_outcome: int) -> dict[str, object]:
    key = f"size/{uuid.uuid4()}"
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "access_records": {**record, **dict.fromkeys(LINKED), "attempt_key": key},
        "attempt_outcomes": {
            **dict.fromkeys(("prev_hash", "outcome_hash", "signer", "signature"), "x"),
            **{"attempt_key": key, "outcome": "failed", "record_hash": "h"},
            **{"chain_seq": next_outcome, "recorded_at": now},
        },
        "checkpoints": {
            **{"keeper": record["keeper"], "chain_seq": 1, "record_hash": "h"},
            **{"signed_at": now, "key_id": "k", "signature": "s", "signer": record["keeper"]},
        },
    }[table]


async def test_no_role_stores_a_chained_record_whose_text_is_past_its_bound(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Every text column of a table of chained records (read from the catalog, so one added
    later is tried too) holds at most 8,192 bytes, whoever inserts the row: the platform's role,
    and an org's login for its own chain, and a row's text at most 32,768. One byte more is
    refused before anything is stored; no chainer, verifier or citizen's page is made to hold a
    record of hundreds of megabytes. Through the writer, a record with a reason of 8,190 bytes
    (characters of three bytes each) is stored, and of 8,196 is not."""
    own = await _waiting_party(pool, settings)
    alone = dict.fromkeys(SIZE_BOUNDED, 0)
    inserts: dict[str, str] = {}
    async with undone_as_owner(pool) as conn:
        await conn.execute(f"{LINK_FIRST} WHERE keeper = $1 AND chain_seq IS NULL", own.party)
        template = dict(
            await conn.fetchrow("SELECT * FROM records.access_records WHERE keeper = $1", own.party)
        )
        record = {
            k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in template.items()
        }
        next_outcome = 1 + await conn.fetchval(
            "SELECT coalesce(max(chain_seq), 0) FROM records.attempt_outcomes"
        )
        for table in SIZE_BOUNDED:
            columns = await conn.fetch(
                "SELECT attname, atttypid::regtype::text AS type FROM pg_catalog.pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
                " AND attname <> 'id' ORDER BY attnum",
                f"records.{table}",
            )
            names = ", ".join(c["attname"] for c in columns)
            insert = inserts[table] = (
                f"INSERT INTO records.{table} ({names}) SELECT {names}"
                f" FROM jsonb_populate_record(NULL::records.{table}, $1::jsonb)"
            )
            texts = [c["attname"] for c in columns if c["type"] in ("text", "character varying")]
            bound = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint"
                " WHERE conrelid = $1::regclass AND conname = 'text_sizes'",
                f"records.{table}",
            )
            assert all(f"octet_length({c})" in bound for c in texts), (table, bound)
            assert all(f"COALESCE(octet_length({c}), 0)" in bound for c in texts), (table, bound)
            assert texts and {c["type"] for c in columns} <= {
                "text",
                "bigint",
                "integer",
                "timestamp with time zone",
            }, table  # a column of another type: say here how its size is bounded
            roles = (
                ["renkei_app", party_role("jps")] if table == "access_records" else ["renkei_app"]
            )
            for role in roles:
                for column in texts:
                    row = _row_of(table, record, next_outcome)
                    if role != "renkei_app":  # an org writes its own answers' records only
                        row = {**row, **dict.fromkeys(("keeper", "provider", "signer"), "jps")}
                    at_bound = await _refusal(conn, role, insert, {**row, column: "x" * TEXT_LIMIT})
                    past = await _refusal(
                        conn, role, insert, {**row, column: "x" * (TEXT_LIMIT + 1)}
                    )
                    assert past is not None, (table, role, column)  # never stored
                    if at_bound is None:  # nothing else refuses the row: its size alone does
                        assert past == "text_sizes", (table, role, column)
                        alone[table] += 1
                    else:  # refused for something else too (a hash but no place), by name first
                        assert at_bound != "text_sizes", (table, role, column)
        # All of a row's text together: 32,768 bytes, however it is shared among its columns.
        free = ("requester", "task", "info", "reason", "step")
        for n, expected in ((4, None), (5, "text_sizes")):
            big = dict.fromkeys(free[:n], "x" * 8000)
            row = {**_row_of("access_records", record, next_outcome), **big}
            assert await _refusal(conn, "renkei_app", inserts["access_records"], row) == expected
    # Most columns were tried alone: the row is a waiting record, as a writer would store it.
    assert alone["access_records"] >= 2 * 20 and alone["attempt_outcomes"] >= 2, alone
    # Through the writer: the bound is bytes, the reason's characters are three bytes each.
    for size, stored in ((TEXT_LIMIT // 3 - 1, True), (TEXT_LIMIT // 3 + 1, False)):
        record = access_record(own.party, 2, attempt_key=f"size/{uuid.uuid4()}", reason="理" * size)
        if stored:
            await records.write(pool, record, signer=own, deferred=True)
        else:
            with pytest.raises(asyncpg.CheckViolationError, match="text_sizes"):
                await records.write(pool, record, signer=own, deferred=True)
        kept = await pool.fetchval(
            "SELECT count(*) FROM records.access_records WHERE attempt_key = $1",
            record.attempt_key,
        )
        assert kept == (1 if stored else 0)


async def test_a_record_the_database_refuses_fails_its_own_call_not_its_groups(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """Records written by concurrent linkages share one statement. One the database refuses for
    what it holds (a reason past its column's bound, as no record the platform makes has) fails
    its own call; the others of its group are written."""
    own = await _party(pool, settings)
    group = records.GroupWriter(pool)
    calls = [access_record(own.party, i, attempt_key=f"d{i}/{uuid.uuid4()}") for i in range(9)]
    calls[4] = calls[4].model_copy(update={"reason": "x" * (TEXT_LIMIT + 1)})
    outcome = await asyncio.gather(
        *(group.write(c, signer=own) for c in calls), return_exceptions=True
    )
    assert isinstance(outcome[4], asyncpg.CheckViolationError), outcome[4]
    assert all(isinstance(r, list) for i, r in enumerate(outcome) if i != 4), outcome
    stored = {r.attempt_key for r in await records.query(pool, keeper=own.party)}
    assert stored == {c.attempt_key for i, c in enumerate(calls) if i != 4}
