"""Metering and billing: the report's counts are the records table's, priced by the tariff."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid

import asyncpg
import pytest
from pydantic import ValidationError

from renkei.app import billing
from renkei.kernel import keys, records
from renkei.kernel.records import HUB
from renkei.kernel.settings import Settings
from whitelist.decide import JST

from .helpers import access_record, child_rearing, pick, run

TARIFFS = billing.Tariffs(
    currency="JPY",
    versions=[
        billing.TariffVersion(
            version=1, valid_from=dt.date(2020, 1, 1), valid_to=dt.date(2026, 11, 15), query=10,
            provision=4,
        ),
        billing.TariffVersion(
            version=2, valid_from=dt.date(2026, 11, 15), query=12, provision=5,
            items={"local-tax": billing.Price(query=20, provision=7)},
        ),
    ],
)  # fmt: skip


def test_the_version_in_force_prices_each_item() -> None:
    assert TARIFFS.on(dt.date(2026, 11, 14)).version == 1
    v2 = TARIFFS.on(dt.date(2026, 11, 15))
    assert (v2.price("local-tax").query, v2.price("resident-record").query) == (20, 12)
    with pytest.raises(ValueError, match="no tariff"):
        TARIFFS.on(dt.date(2019, 12, 31))


def test_overlapping_or_repeated_versions_are_refused() -> None:
    v = TARIFFS.versions
    with pytest.raises(ValidationError, match="overlap"):
        billing.Tariffs(currency="JPY", versions=[v[0].model_copy(update={"valid_to": None}), v[1]])
    with pytest.raises(ValidationError, match="repeat"):
        billing.Tariffs(currency="JPY", versions=[v[0], v[1].model_copy(update={"version": 1})])
    assert billing.load_tariffs().versions  # the shipped file loads


def test_months_are_japanese_calendar_months() -> None:
    start, end = billing.month_bounds("2026-12")
    assert (start.isoformat(), end.isoformat()) == (
        "2026-12-01T00:00:00+09:00",
        "2027-01-01T00:00:00+09:00",
    )
    with pytest.raises(ValueError, match="YYYY-MM"):
        billing.month_bounds("2026-13")


# The conformance kit's runs are billed to nobody (tests/test_kit_isolation.py).
NOT_KIT = (
    " AND NOT EXISTS (SELECT 1 FROM records.conformance_runs c"
    " WHERE c.workflow_id = a.workflow_id AND c.run_id = a.run_id)"
)


async def _counts(pool: asyncpg.Pool, month: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    start, end = billing.month_bounds(month)
    queries = {
        (r["requester"], r["task"], r["info"]): (r["allowed"], r["denied"])
        for r in await pool.fetch(
            "SELECT requester, task, info,"
            " count(*) FILTER (WHERE outcome = 'allowed') AS allowed,"
            " count(*) FILTER (WHERE outcome = 'denied') AS denied"
            " FROM records.access_records a WHERE keeper = $3 AND requester <> provider"
            " AND recorded_at >= $1 AND recorded_at < $2" + NOT_KIT + " GROUP BY 1, 2, 3",
            start,
            end,
            HUB,
        )
    }
    provisions = {
        (r["provider"], r["task"], r["info"]): r["n"]
        for r in await pool.fetch(
            "SELECT provider, task, info, count(*) AS n FROM records.access_records a"
            " WHERE keeper = provider AND requester <> provider AND outcome = 'allowed'"
            " AND recorded_at >= $1 AND recorded_at < $2" + NOT_KIT + " GROUP BY 1, 2, 3",
            start,
            end,
        )
    }
    return queries, provisions


async def test_the_report_matches_the_records_exactly(env, pool, settings: Settings) -> None:
    h = pick(settings, lambda h: h.municipality == "city-minato" and h.kind == "family")
    for _ in range(2):
        await (await env.start(child_rearing(settings, h.members[0], h.members[1]))).result()
    # An agency's look-up in its own register (through the hub, or a life-event scan at its own
    # gate) passes between no agencies: billed to neither side.
    own = f"own/{uuid.uuid4()}"  # one attempt, both sides (the hub writes them together)
    for keeper in (HUB, "city-minato"):
        await records.write(
            pool,
            access_record(
                keeper,
                0,
                attempt_key=own,
                requester="city-minato",
                task="child-allowance",
                info="resident-cohort",
                legal_reference="番号法第9条第2項（条例・サンプル）",
                workflow_id="renkei.life-event-scan/test",
            ),
            # Written as the hub writes its own and a requester's side: signed with its key.
            signer=records.RecordSigner(HUB, keys.load(settings).signer()),
        )
    month = dt.datetime.now(JST).strftime("%Y-%m")
    found = await billing.report(pool, month, billing.load_tariffs())
    queries, provisions = await _counts(pool, month)
    assert not [x for x in found.lines if x.info == "resident-cohort"]
    assert queries and provisions

    got_q: dict[tuple[str, str, str], list[int]] = {}
    got_p: dict[tuple[str, str, str], int] = {}
    for line in found.lines:
        key = (line.org, line.task, line.info)
        if line.party == "requester":
            acc = got_q.setdefault(key, [0, 0])
            acc[0] += line.count
            acc[1] += line.denied
        else:
            got_p[key] = got_p.get(key, 0) + line.count
        price = billing.load_tariffs().on(dt.datetime.now(JST).date()).price(line.info)
        assert line.amount == line.count * line.unit_price
        assert line.unit_price == (price.query if line.party == "requester" else price.provision)
    assert {k: tuple(v) for k, v in got_q.items()} == queries
    assert {k: v for k, v in got_p.items() if v} == provisions
    assert sum(found.totals.values()) == sum(line.amount for line in found.lines)
    # Each chain's range holds the records counted (an org's chain also holds its requester-side
    # records in between, which the range spans but does not count), and its ends are the
    # stored records.
    for c in found.chains:
        assert 0 < c.records <= c.last_seq - c.first_seq + 1, c
        first, last = [
            await pool.fetchval(
                "SELECT record_hash FROM records.access_records"
                " WHERE keeper = $1 AND chain_seq = $2",
                c.keeper,
                seq,
            )
            for seq in (c.first_seq, c.last_seq)
        ]
        assert (first, last) == (c.first_hash, c.last_hash)
    assert HUB in {c.keeper for c in found.chains}


def test_the_cli_prints_the_same_report_as_json_and_csv(cli, settings: Settings) -> None:
    month = dt.datetime.now(JST).strftime("%Y-%m")
    code, out = run(cli, "billing", "report", "--month", month)
    assert code == 0, out
    as_json = billing.BillingReport.model_validate(json.loads(out))
    code, out = run(cli, "billing", "report", "--month", month, "--format", "csv")
    assert code == 0, out
    lines_part, _, chains_part = out.partition("\n\n")
    rows = list(csv.DictReader(io.StringIO(lines_part)))
    assert len(rows) == len(as_json.lines)
    assert sum(int(r["amount"]) for r in rows) == sum(x.amount for x in as_json.lines)
    assert len(list(csv.DictReader(io.StringIO(chains_part)))) == len(as_json.chains)
    code, out = run(cli, "billing", "report", "--month", "2026/11")
    assert code == 2 and "YYYY-MM" in out
