"""Metering and billing (情報照会・提供に関する課金) from the access records.

For one month (in Japan's time zone, by when records were written to their chains):

- each **requester** is charged for the queries the hub allowed — counted from the hub's own
  chain, by requester, task and info item; denied queries are counted beside them, unpriced;
- each **provider** is charged for its provisions — the allowed requests of other agencies that
  reached it, counted from the provider's own chain, by task and info item.

An agency's look-up in its own register (a municipality reading its resident record, a life-event
scan of its residents) does not pass between agencies and is billed to neither side; nor is a
conformance-kit run's (``records.conformance_runs``, noted by the kit's own hub).

Prices come from the tariff file (``RENKEI_TARIFF_FILE``): versions with validity dates, per-item
overrides. The report names every chain it counted, with the first and last record (sequence
number and hash) of the month, so anyone holding the records can recount it and check the chain.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
from pathlib import Path
from typing import Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from renkei.kernel.records import HUB
from renkei.kernel.yaml_limits import read_file
from whitelist.decide import JST

DEFAULT_TARIFFS = Path(__file__).parent / "data" / "tariffs.yaml"


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: int = Field(ge=0)
    provision: int = Field(ge=0)


class TariffVersion(Price):
    version: int = Field(ge=1)
    valid_from: dt.date
    valid_to: dt.date | None = None
    items: dict[str, Price] = Field(default_factory=dict)

    def in_force(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    def price(self, info: str) -> Price:
        return self.items.get(info, self)


class Tariffs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    currency: str
    versions: list[TariffVersion]

    @model_validator(mode="after")
    def _no_overlap(self) -> Tariffs:
        ordered = sorted(self.versions, key=lambda v: v.valid_from)
        for a, b in itertools.pairwise(ordered):
            if a.valid_to is None or a.valid_to > b.valid_from:
                raise ValueError(f"tariff versions {a.version} and {b.version} overlap")
        if len({v.version for v in self.versions}) != len(self.versions):
            raise ValueError("tariff version numbers repeat")
        return self

    def on(self, day: dt.date) -> TariffVersion:
        for v in self.versions:
            if v.in_force(day):
                return v
        raise ValueError(f"no tariff version is in force on {day.isoformat()}")


def load_tariffs(path: Path = DEFAULT_TARIFFS) -> Tariffs:
    return Tariffs.model_validate(read_file(path))


class Line(BaseModel):
    party: Literal["requester", "provider"]
    org: str
    task: str
    info: str
    tariff_version: int
    count: int
    denied: int = Field(description="requesters: queries the hub denied (not priced)")
    unit_price: int
    amount: int


class ChainRange(BaseModel):
    keeper: str
    records: int
    first_seq: int
    last_seq: int
    first_hash: str
    last_hash: str


class BillingReport(BaseModel):
    month: str
    currency: str
    period_start: dt.datetime
    period_end: dt.datetime
    tariff_versions: list[int]
    lines: list[Line]
    totals: dict[str, int] = Field(description="amount per org, both parties together")
    chains: list[ChainRange]


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """``YYYY-MM`` → [start, end) in Japan's time zone."""
    try:
        first = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=JST)
    except ValueError:
        raise ValueError(f"month {month!r}: expected YYYY-MM") from None
    after = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    return first, after


async def report(pool: asyncpg.Pool, month: str, tariffs: Tariffs) -> BillingReport:
    start, end = month_bounds(month)
    rows = await pool.fetch(
        """
        SELECT CASE WHEN keeper = $3 THEN 'requester' ELSE 'provider' END AS party,
               CASE WHEN keeper = $3 THEN requester ELSE provider END AS org,
               task, info, (recorded_at AT TIME ZONE 'Asia/Tokyo')::date AS day,
               count(*) FILTER (WHERE outcome = 'allowed') AS allowed,
               count(*) FILTER (WHERE outcome = 'denied') AS denied
          FROM records.access_records a
         WHERE recorded_at >= $1 AND recorded_at < $2
           AND (keeper = $3 OR keeper = provider) AND requester <> provider
           AND NOT EXISTS (SELECT 1 FROM records.conformance_runs c
                            WHERE c.workflow_id = a.workflow_id AND c.run_id = a.run_id)
         GROUP BY 1, 2, 3, 4, 5
        """,
        start,
        end,
        HUB,
    )
    sums: dict[tuple[str, str, str, str, int], list[int]] = {}
    versions: set[int] = set()
    for r in rows:
        tariff = tariffs.on(r["day"])
        versions.add(tariff.version)
        key = (r["party"], r["org"], r["task"], r["info"], tariff.version)
        acc = sums.setdefault(key, [0, 0])
        acc[0] += r["allowed"]
        acc[1] += r["denied"] if r["party"] == "requester" else 0
    by_version = {v.version: v for v in tariffs.versions}
    lines = []
    for (party, org, task, info, version), (count, denied) in sorted(sums.items()):
        price = by_version[version].price(info)
        unit = price.query if party == "requester" else price.provision
        lines.append(
            Line(
                party=party,
                org=org,
                task=task,
                info=info,
                tariff_version=version,
                count=count,
                denied=denied,
                unit_price=unit,
                amount=unit * count,
            )
        )
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.org] = totals.get(line.org, 0) + line.amount
    chains = [
        ChainRange(**dict(c))
        for c in await pool.fetch(
            """
            SELECT keeper, count(*) AS records, min(chain_seq) AS first_seq,
                   max(chain_seq) AS last_seq,
                   (array_agg(record_hash ORDER BY chain_seq))[1] AS first_hash,
                   (array_agg(record_hash ORDER BY chain_seq DESC))[1] AS last_hash
              FROM records.access_records a
             WHERE recorded_at >= $1 AND recorded_at < $2
               AND (keeper = $3 OR keeper = provider) AND requester <> provider
               AND NOT EXISTS (SELECT 1 FROM records.conformance_runs c
                                WHERE c.workflow_id = a.workflow_id AND c.run_id = a.run_id)
             GROUP BY keeper ORDER BY keeper
            """,
            start,
            end,
            HUB,
        )
    ]
    return BillingReport(
        month=month,
        currency=tariffs.currency,
        period_start=start,
        period_end=end,
        tariff_versions=sorted(versions),
        lines=lines,
        totals=dict(sorted(totals.items())),
        chains=chains,
    )


def to_csv(r: BillingReport) -> str:
    """The lines, then the chains counted (a second table after a blank line)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    fields = list(Line.model_fields)
    w.writerow(fields)
    for line in r.lines:
        w.writerow([getattr(line, f) for f in fields])
    w.writerow([])
    chain_fields = list(ChainRange.model_fields)
    w.writerow(chain_fields)
    for c in r.chains:
        w.writerow([getattr(c, f) for f in chain_fields])
    return out.getvalue()
