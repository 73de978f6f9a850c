"""The whitelist: the real Annex Table 2, the decision, the store and live reloading."""

from __future__ import annotations

import csv
import datetime as dt

import asyncpg
import pytest

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
    pool: asyncpg.Pool, live_whitelist: LiveWhitelist
) -> None:
    row = _row(dt.date(2020, 1, 1), None, rid="test/live").model_copy(
        update={"task": "live-reload-task"}
    )
    args = (["municipal-mayor"], "live-reload-task", ["jasso"], "local-tax", TODAY)
    assert not live_whitelist.index.decide(*args).allowed
    version = await store.upsert_rows(pool, [row])
    try:
        await live_whitelist.wait_for_version(version)
        assert live_whitelist.index.decide(*args).allowed
    finally:
        version = await store.delete_rows(pool, ["test/live"])
        await live_whitelist.wait_for_version(version)
    assert not live_whitelist.index.decide(*args).allowed
