"""Usage for operators (見える化): per procedure (BPF), requesting org and month, what was asked,
what was denied and why, how long answers took, and which procedures no one used.

Counted from the hub's access records (one per attempt, whoever asked) and the outcomes the hub
appended (``records.attempt_outcomes``). Nothing personal: no subject code, no workflow id, no
person's data is read; a denial's reason is the whitelist's explanation, which names roles,
tasks, items and legal references only.

**Latency** is from the hub's decision (the record's ``decided_at``) to the outcome's
``recorded_at``, for provided attempts: the hub writes the requester's and its own record when it
decides, before the provider is asked, so those records' own times are a few milliseconds apart
and say nothing of the answer; the outcome is appended when the provider's signed answer came
back, so the span is the linkage's time as the requester waited for it. The median is the
50th percentile interpolated (``percentile_cont``); p99 is the nearest rank (``percentile_disc``:
the smallest latency at or above which 1% of the attempts lie).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable

import asyncpg
from pydantic import BaseModel, Field

from renkei.app.billing import month_bounds
from renkei.kernel.records import HUB

LATENCY_BASIS = (
    "hub decision (record decided_at) to recorded outcome (outcome recorded_at), provided"
    " attempts only; median interpolated, p99 nearest rank"
)


class UsageRow(BaseModel):
    month: str = Field(description="YYYY-MM, Japan time")
    bpf: str
    org: str = Field(description="the requesting org")
    queries: int = Field(description="attempts the hub decided")
    allowed: int
    provided: int
    denied: int = Field(description="by the hub, or by the provider's gate")
    denials: dict[str, int] = Field(description="denials by the whitelist's reason")
    no_answer: int
    failed: int
    cancelled: int = Field(description="allowed, then cancelled before its answer")
    not_asked: int = Field(
        description="permitted ahead of its step; the flow ended before it asked the provider"
    )
    pending: int = Field(description="allowed, no outcome recorded yet")
    median_ms: float | None
    p99_ms: float | None


class UnusedVersion(BaseModel):
    bpf: str
    version: int
    state: str


class UsageReport(BaseModel):
    first_month: str
    last_month: str
    period_start: dt.datetime
    period_end: dt.datetime
    latency: str = LATENCY_BASIS
    rows: list[UsageRow]
    unused_versions: list[UnusedVersion] = Field(
        description="registered BPF versions (not retired) no attempt of the period ran"
    )
    unused_tasks: list[str] = Field(
        description="the catalog's tasks no attempt of the period named"
    )


_ROWS = """
WITH a AS (
  SELECT to_char(r.recorded_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM') AS month,
         r.bpf, r.requester AS org, r.outcome AS decision, r.reason, o.outcome AS ended,
         CASE WHEN o.outcome = 'provided'
              THEN extract(epoch FROM (o.recorded_at - r.decided_at)) * 1000 END AS ms
    FROM records.access_records r
    LEFT JOIN records.attempt_outcomes o ON o.attempt_key = r.attempt_key
   WHERE r.keeper = $3 AND r.recorded_at >= $1 AND r.recorded_at < $2
)
SELECT month, bpf, org, count(*) AS queries,
       count(*) FILTER (WHERE decision = 'allowed') AS allowed,
       count(*) FILTER (WHERE ended = 'provided') AS provided,
       count(*) FILTER (WHERE decision = 'denied' OR ended = 'denied') AS denied,
       count(*) FILTER (WHERE ended = 'no_answer') AS no_answer,
       count(*) FILTER (WHERE ended IN ('failed', 'unreceipted')) AS failed,  -- not provided
       count(*) FILTER (WHERE ended = 'cancelled') AS cancelled,
       -- not provided, the provider never asked (permitted ahead, the flow ended before)
       count(*) FILTER (WHERE ended = 'not_asked') AS not_asked,
       count(*) FILTER (WHERE decision = 'allowed' AND ended IS NULL) AS pending,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS median_ms,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY ms) AS p99_ms
  FROM a GROUP BY month, bpf, org ORDER BY month, bpf, org
"""
_DENIALS = """
SELECT to_char(r.recorded_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM') AS month, r.bpf,
       r.requester AS org, regexp_replace(r.reason, $4, '(time)', 'g') AS reason, count(*) AS n
  FROM records.access_records r
 WHERE r.keeper = $3 AND r.recorded_at >= $1 AND r.recorded_at < $2 AND r.outcome = 'denied'
 GROUP BY 1, 2, 3, 4
UNION ALL
SELECT to_char(r.recorded_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM'), r.bpf, r.requester,
       'denied by the provider''s gate', count(*)
  FROM records.access_records r
  JOIN records.attempt_outcomes o ON o.attempt_key = r.attempt_key AND o.outcome = 'denied'
 WHERE r.keeper = $3 AND r.recorded_at >= $1 AND r.recorded_at < $2 AND r.outcome = 'allowed'
 GROUP BY 1, 2, 3, 4
"""
# A moment in a reason (the time a row was not in force at): one per attempt, so reasons are
# grouped with it replaced; dates (a row's validity) stay.
MOMENT = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?([+-][0-9]{2}:[0-9]{2}|Z)?"
_USED = """
SELECT DISTINCT bpf, bpf_version, parent_bpf, task FROM records.access_records
 WHERE keeper = $3 AND recorded_at >= $1 AND recorded_at < $2
"""


async def report(
    pool: asyncpg.Pool, month: str, catalog_tasks: Iterable[str], last_month: str | None = None
) -> UsageReport:
    """Usage from ``month`` through ``last_month`` (default: that month alone), a row per month,
    BPF and org. A BPF version counts as used when an attempt of the period ran under it, or
    under a child flow it started (the child's records name it as their parent)."""
    last = last_month or month
    start, _ = month_bounds(month)
    _, end = month_bounds(last)
    if end <= start:
        raise ValueError(f"the period ends ({last}) before it starts ({month})")
    denials: dict[tuple[str, str, str], dict[str, int]] = {}
    for d in await pool.fetch(_DENIALS, start, end, HUB, MOMENT):
        by = denials.setdefault((d["month"], d["bpf"], d["org"]), {})
        by[d["reason"]] = by.get(d["reason"], 0) + d["n"]
    rows = [
        UsageRow(
            **{k: r[k] for k in r.keys() if k not in ("median_ms", "p99_ms")},
            denials=dict(sorted(denials.get((r["month"], r["bpf"], r["org"]), {}).items())),
            median_ms=_ms(r["median_ms"]),
            p99_ms=_ms(r["p99_ms"]),
        )
        for r in await pool.fetch(_ROWS, start, end, HUB)
    ]
    used = await pool.fetch(_USED, start, end, HUB)
    used_versions = {(u["bpf"], u["bpf_version"]) for u in used}
    parents = {u["parent_bpf"] for u in used if u["parent_bpf"]}
    used_tasks = {u["task"] for u in used}
    registered = await pool.fetch(
        "SELECT bpf, version, state FROM registry.bpf_versions WHERE state <> 'retired'"
        " ORDER BY bpf, version"
    )
    unused = [
        UnusedVersion(bpf=v["bpf"], version=v["version"], state=v["state"])
        for v in registered
        if (v["bpf"], v["version"]) not in used_versions and v["bpf"] not in parents
    ]
    return UsageReport(
        first_month=month,
        last_month=last,
        period_start=start,
        period_end=end,
        rows=rows,
        unused_versions=unused,
        unused_tasks=sorted(set(catalog_tasks) - used_tasks),
    )


def _ms(value: object) -> float | None:
    return None if value is None else round(float(value), 1)  # type: ignore[arg-type]


def to_csv(r: UsageReport) -> str:
    """The rows (denials as ``reason=count`` joined by ``; ``), then the unused versions and
    tasks, each table after a blank line."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    fields = [f for f in UsageRow.model_fields]
    w.writerow(fields)
    for row in r.rows:
        values = row.model_dump()
        values["denials"] = "; ".join(f"{k}={v}" for k, v in row.denials.items())
        w.writerow([values[f] if values[f] is not None else "" for f in fields])
    w.writerow([])
    w.writerow(["unused_bpf", "version", "state"])
    for v in r.unused_versions:
        w.writerow([v.bpf, v.version, v.state])
    w.writerow([])
    w.writerow(["unused_task"])
    for t in r.unused_tasks:
        w.writerow([t])
    return out.getvalue()


def to_table(r: UsageReport) -> str:
    """A plain-text table for the terminal."""
    head = ("month", "BPF", "org", "queries", "provided", "denied", "other", "median ms", "p99 ms")
    body = [
        (
            row.month,
            row.bpf,
            row.org,
            str(row.queries),
            str(row.provided),
            str(row.denied),
            str(row.no_answer + row.failed + row.cancelled + row.not_asked + row.pending),
            "-" if row.median_ms is None else f"{row.median_ms:.1f}",
            "-" if row.p99_ms is None else f"{row.p99_ms:.1f}",
        )
        for row in r.rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = [
        "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(x, widths, strict=True))
        )
        for x in (head, *body)
    ]
    lines.append("")
    lines.append(f"latency: {r.latency}")
    lines.append(
        "never used: "
        + (", ".join(f"{v.bpf} v{v.version} ({v.state})" for v in r.unused_versions) or "-")
    )
    lines.append(f"tasks never used: {len(r.unused_tasks)}")
    lines.extend(f"  {t}" for t in r.unused_tasks)
    return "\n".join(lines)
