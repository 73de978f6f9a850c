"""The whitelist: the real Annex Table 2, the decision, the store and live reloading."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from renkei.kernel import keys
from whitelist import store
from whitelist.annex2 import ANNEX2_DIR, item_number, load_annex2
from whitelist.decide import WhitelistIndex
from whitelist.models import WhitelistRow
from whitelist.store import LiveWhitelist

TODAY = dt.date(2026, 11, 26)


@pytest.fixture(scope="module")
def rows(catalog_module):
    return load_annex2(catalog_module)


@pytest.fixture(scope="module")
def catalog_module():
    from whitelist.catalog import default_catalog

    return default_catalog()


def _csv_rows() -> list[dict[str, str]]:
    with (ANNEX2_DIR / "annex2-2015.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_statutory_row_of_annex2_becomes_structured_entries(rows) -> None:
    statutory = _csv_rows()
    assert len(statutory) == 259
    texts = {r.legal_text for r in rows}
    for rec in statutory:
        legal = f"番号法別表第二 {rec['item']}項: {rec['requester']} | {rec['task']} | {rec['provider']} | {rec['info']}"
        assert legal in texts, rec["item"]
    assert {r.item for r in rows} == {f"番号法別表第二 {rec['item']}項" for rec in statutory}


def test_item_numbers_convert_from_kanji() -> None:
    assert item_number("十七") == "17"
    assert item_number("五十七") == "57"
    assert item_number("百二十") == "120"
    assert item_number("五十六の二") == "56-2"


def test_every_row_is_allowed_for_its_own_roles_and_denied_for_another_task(rows) -> None:
    index = WhitelistIndex(rows)
    for row in rows:
        d = index.decide([row.requester_role], row.task, [row.provider_role], row.info, TODAY)
        assert d.allowed and d.row is not None and d.row.item == row.item
        other = "student-loans" if row.task != "student-loans" else "child-allowance"
        if not any(
            r.task == other
            and r.info == row.info
            and r.requester_role == row.requester_role
            and r.provider_role == row.provider_role
            for r in rows
        ):
            assert not index.decide(
                [row.requester_role], other, [row.provider_role], row.info, TODAY
            ).allowed


@pytest.mark.parametrize(
    ("requester", "task", "provider", "info", "item"),
    [
        (
            "city-minato",
            "vaccination-health-damage-relief",
            "kyokai-kenpo",
            "medical-benefit",
            "十七",
        ),
        ("pref-tokyo", "child-rearing-allowance", "city-minato", "resident-record", "五十七"),
        ("pref-tokyo", "child-rearing-allowance", "city-minato", "local-tax", "五十七"),
        ("city-minato", "child-allowance", "city-shibuya", "local-tax", "七十四"),
        ("city-minato", "child-allowance", "jps", "pension-benefit", "七十五"),
    ],
)
def test_sample_linkages_are_permitted_by_their_rows(
    catalog_module, rows, requester, task, provider, info, item
) -> None:
    d = WhitelistIndex(rows).decide(
        catalog_module.org_roles(requester), task, catalog_module.org_roles(provider), info, TODAY
    )
    assert d.allowed
    assert d.legal_reference == f"番号法別表第二 {item}項"


@pytest.mark.parametrize(
    ("requester", "task", "provider", "info"),
    [
        ("city-minato", "child-allowance", "kyokai-kenpo", "medical-benefit"),
        ("city-minato", "child-allowance", "jps", "local-tax"),
        ("kyokai-kenpo", "child-rearing-allowance", "city-minato", "local-tax"),
        ("pref-tokyo", "child-rearing-allowance", "jps", "resident-record"),
    ],
)
def test_linkages_outside_the_table_are_denied_with_a_reason(
    catalog_module, rows, requester, task, provider, info
) -> None:
    d = WhitelistIndex(rows).decide(
        catalog_module.org_roles(requester), task, catalog_module.org_roles(provider), info, TODAY
    )
    assert not d.allowed and d.row is None
    assert d.reason


def _row(valid_from: dt.date, valid_to: dt.date | None, rid: str = "test/1") -> WhitelistRow:
    return WhitelistRow(
        id=rid,
        source="test",
        item="test 1",
        requester_role="municipal-mayor",
        task="student-loans",
        provider_role="jasso",
        info="local-tax",
        legal_text="test",
        valid_from=valid_from,
        valid_to=valid_to,
    )


def test_a_row_only_allows_within_its_validity_period() -> None:
    index = WhitelistIndex([_row(dt.date(2020, 1, 1), dt.date(2024, 5, 27))])
    args = (["municipal-mayor"], "student-loans", ["jasso"], "local-tax")
    assert index.decide(*args, dt.date(2020, 1, 1)).allowed
    assert index.decide(*args, dt.date(2024, 5, 26)).allowed
    late = index.decide(*args, dt.date(2024, 5, 27))
    assert not late.allowed and "not in force" in late.reason
    assert not index.decide(*args, dt.date(2019, 12, 31)).allowed


def test_decision_looks_up_role_pairs_not_the_table(rows) -> None:
    big = WhitelistIndex(
        list(rows)
        + [
            _row(dt.date(2020, 1, 1), None, rid=f"test/{i}").model_copy(update={"task": f"t-{i}"})
            for i in range(100_000)
        ]
    )
    assert len(big) == len(rows) + 100_000
    d = big.decide(
        ["prefectural-governor-etc"],
        "child-rearing-allowance",
        ["municipal-mayor"],
        "local-tax",
        TODAY,
    )
    assert d.allowed


async def test_store_round_trips_the_real_table(pool: asyncpg.Pool, rows) -> None:
    stored = await store.fetch_rows(pool, "source = 'annex2-2015'")
    assert sorted(stored, key=lambda r: r.id) == sorted(rows, key=lambda r: r.id)


async def test_workers_pick_up_a_new_row_without_restart(
    pool: asyncpg.Pool, live_whitelist: LiveWhitelist, settings
) -> None:
    row = _row(dt.date(2020, 1, 1), None, rid="test/live").model_copy(
        update={"task": "live-reload-task"}
    )
    args = (["municipal-mayor"], "live-reload-task", ["jasso"], "local-tax", TODAY)
    assert not live_whitelist.index.decide(*args).allowed
    version = await store.upsert_rows(pool, [row], hub=keys.load(settings).signer())
    try:
        await live_whitelist.wait_for_version(version)
        assert live_whitelist.index.decide(*args).allowed
    finally:
        version = await store.delete_rows(pool, ["test/live"], hub=keys.load(settings).signer())
        await live_whitelist.wait_for_version(version)
    assert not live_whitelist.index.decide(*args).allowed


async def test_a_row_written_in_the_database_past_a_load_decides_nothing(
    pool: asyncpg.Pool, live_whitelist: LiveWhitelist, settings
) -> None:
    """Any process with the application's role can write the whitelist's tables: a row the law
    does not have, added so, would have the hub and every provider's gate permit its linkage.
    The whitelist is read only with the hub's seal over exactly what is read: a worker keeps
    the whitelist it had, and one starting does not start; a seal copied under a later number,
    or one signed with another key, does not hold, and none can be changed or removed. Rows put
    back as sealed are read again; a load sealed with the hub's key is taken at once."""
    from whitelist.seal import WhitelistUnsealed

    hub = keys.load(settings).signer()
    forged = _row(dt.date(2020, 1, 1), None, rid="test/forged").model_copy(
        update={"task": "forged-task", "source": "annex2-2015"}
    )
    args = (["municipal-mayor"], "forged-task", ["jasso"], "local-tax", TODAY)
    before = live_whitelist.version

    async def written(sql: str, *values: object) -> None:  # the application's role, and a bump
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql, *values)
            version = await conn.fetchval(
                "UPDATE whitelist.version SET version = version + 1 RETURNING version"
            )
            await conn.execute("SELECT pg_notify('renkei_whitelist', $1)", str(version))

    async def fresh() -> None:
        live = LiveWhitelist(settings.database_url, sealed_by=hub.public_key())
        try:
            await live.start()
        finally:
            await live.stop()

    row = forged.model_dump()
    await written(
        "INSERT INTO whitelist.rows (id, source, item, requester_role, task, provider_role, info,"
        " legal_text, valid_from, valid_to, scope) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'consent')",
        *(row[c] for c in ("id", "source", "item", "requester_role", "task", "provider_role")),
        *(row[c] for c in ("info", "legal_text", "valid_from", "valid_to")),
    )
    try:
        await asyncio.sleep(1.0)  # the notice reached the worker, which read and refused it
        assert live_whitelist.version == before
        assert not live_whitelist.index.decide(*args).allowed
        with pytest.raises(WhitelistUnsealed, match="not what the hub sealed"):
            await fresh()
        with pytest.raises(WhitelistUnsealed):
            await store.load_index(pool, sealed_by=hub.public_key())
        # The hub loads nothing over rows no load wrote (its seal would cover them).
        with pytest.raises(WhitelistUnsealed, match="content that no load or registry change"):
            await store.upsert_rows(pool, [_row(dt.date(2020, 1, 1), None, rid="test/x")], hub=hub)
        # The newest seal copied under a number chosen ahead: refused; under the sequence's
        # next number: it does not hold (its number is signed). The forged content sealed with
        # a key that is not the hub's: it does not hold either.
        newest = await pool.fetchrow("SELECT * FROM whitelist.seals ORDER BY id DESC LIMIT 1")
        copy = (newest["digest"], newest["signing_id"], newest["signature"])
        insert = "INSERT INTO whitelist.seals (id, digest, signing_id, signature) VALUES"
        with pytest.raises(asyncpg.PostgresError):
            await pool.execute(f"{insert} ($1, $2, $3, $4)", 2**62, *copy)
        async with pool.acquire() as conn:
            await conn.execute(f"{insert} (nextval('whitelist.seals_id_seq'), $1, $2, $3)", *copy)
        from whitelist import seal

        other = Ed25519PrivateKey.generate()
        async with pool.acquire() as conn:
            digest = await seal.current_digest(conn)
            await seal.seal(conn, other, digest)
        with pytest.raises(WhitelistUnsealed, match="not what the hub sealed"):
            await fresh()
        # Junk seals enough to hide the hub's newest from a reader's look: the whitelist is read
        # as sealed by no one, and the hub seals nothing over what is there now (a denial, never
        # a permit; rolled back here, for it would stay: seals are never removed).
        async with pool.acquire() as conn:
            junk = conn.transaction()
            await junk.start()
            try:
                for _ in range(seal.SEALS_LOOKED_AT):
                    await conn.execute(
                        f"{insert} (nextval('whitelist.seals_id_seq'), $1, 'k-junk', 'junk')",
                        digest,
                    )
                with pytest.raises(WhitelistUnsealed, match="no seal of the hub's"):
                    await store.load_index(conn, sealed_by=hub.public_key())
                with pytest.raises(WhitelistUnsealed, match="none of the newest"):
                    await seal.begin(conn, hub)
            finally:
                await junk.rollback()
        for sql in ("UPDATE whitelist.seals SET digest = $1", "DELETE FROM whitelist.seals"):
            with pytest.raises(asyncpg.PostgresError):
                await pool.execute(sql, *([digest] if "$1" in sql else []))
        # An existing row's scope widened, the forged row gone: refused all the same.
        await written("DELETE FROM whitelist.rows WHERE id = 'test/forged'")
        widened = await pool.fetchval(
            "SELECT id FROM whitelist.rows WHERE scope = 'consent' ORDER BY id LIMIT 1"
        )
        await written("UPDATE whitelist.rows SET scope = 'between-bodies' WHERE id = $1", widened)
        with pytest.raises(WhitelistUnsealed):
            await fresh()
        await written("UPDATE whitelist.rows SET scope = 'consent' WHERE id = $1", widened)
    finally:
        await written("DELETE FROM whitelist.rows WHERE id = 'test/forged'")
    await fresh()  # put back as sealed: read again
    # A load the hub seals is taken at once, past the seals that do not hold; the version
    # number set far ahead by the application's role does not keep a worker on what it had.
    await written("SELECT 1")
    await pool.execute("UPDATE whitelist.version SET version = version + 1000000")
    version = await store.upsert_rows(pool, [forged.model_copy(update={"source": "test"})], hub=hub)
    try:
        await live_whitelist.wait_for_version(version)
        assert live_whitelist.index.decide(*args).allowed
        await pool.execute("UPDATE whitelist.version SET version = 1")
    finally:
        await store.delete_rows(pool, ["test/forged"], hub=hub)
    for _ in range(100):  # the seal is newer, whatever the version says
        if not live_whitelist.index.decide(*args).allowed:
            break
        await asyncio.sleep(0.1)
    assert not live_whitelist.index.decide(*args).allowed
    # A worker that finds the newest seal over content it cannot read as sealed (the row the
    # hub removed put back before the worker read it) decides nothing rather than keep the old.
    frozen = LiveWhitelist(settings.database_url, sealed_by=hub.public_key())
    await frozen.start()
    try:
        frozen.freeze()
        held = frozen.index
        await store.upsert_rows(pool, [forged.model_copy(update={"source": "test"})], hub=hub)
        await store.delete_rows(pool, ["test/forged"], hub=hub)
        await written(
            "INSERT INTO whitelist.rows (id, source, item, requester_role, task, provider_role,"
            " info, legal_text, valid_from, valid_to) VALUES"
            " ($1, 'test', $2, $3, $4, $5, $6, $7, $8, $9)",
            *(row[c] for c in ("id", "item", "requester_role", "task", "provider_role")),
            *(row[c] for c in ("info", "legal_text", "valid_from", "valid_to")),
        )
        async with pool.acquire() as conn:
            await frozen.load(conn)  # type: ignore[arg-type]
        assert frozen.index is not held and len(frozen.index) == 0
    finally:
        await written("DELETE FROM whitelist.rows WHERE id = 'test/forged'")
        await frozen.stop()
    await fresh()
