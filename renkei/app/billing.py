"""Billing (情報照会・提供に関する課金): who pays whom, by a model, in invoices reconciled to the
signed access records.

The **model** (``RENKEI_TARIFF_FILE``, see ``docs/billing.md``) names the payee and, per version
with validity dates, what a query costs (by procedure, info item, or flat), what a provision
costs (0 by default: a provision the law obliges is not charged to the provider) and a flat
monthly fee per org. A malformed file is refused with the file, the line and the field.

An **invoice** is one org's bill for one month (Japan time, by when the hub recorded each
attempt). A query is charged when the hub allowed it and its recorded outcome is ``provided``
(``records.attempt_outcomes``): a denied, unanswered, failed, cancelled or still pending attempt
is listed beside the charged ones, not charged. An org's look-up in its own register is billed to
no one. Each invoice names the chain ranges it counts (keeper, first..last ``chain_seq``, their
hashes) and a digest of every record and outcome it read, and keeps the model it was priced with,
so :func:`verify` recomputes it from the records and reports every difference.

Invoices are **issued** into ``billing.invoices`` (append-only, numbered): issuing a month again
stores a new revision for each org whose invoice changed, and leaves the others as they are.
A conformance-kit run's attempts (``records.conformance_runs``, noted by the kit's own hub)
are billed to no one.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from renkei.bpf.loader import SourceMap, format_path
from renkei.kernel import records
from renkei.kernel.records import HUB, Conn
from renkei.kernel.yaml_limits import YamlFileError, read_file
from whitelist.decide import JST

DEFAULT_TARIFFS = Path(__file__).parent / "data" / "tariffs.yaml"
OUTCOMES_CHAIN = "hub (outcomes)"  # as records verification names the chain of outcomes
NOT_CHARGED = (
    "denied",
    "no_answer",
    "failed",
    "cancelled",
    "unreceipted",
    "not_asked",
    "pending",
)


# -- the model --


Price = Annotated[int, Field(ge=0)]


class ModelVersion(BaseModel):
    """One version of the prices, in force from ``valid_from`` (inclusive) to ``valid_to``."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    valid_from: dt.date
    valid_to: dt.date | None = None
    per_query: int = Field(ge=0, description="price of a provided query, charged to the requester")
    items: dict[str, Price] = Field(default_factory=dict, description="per info item")
    procedures: dict[str, Price] = Field(default_factory=dict, description="per BPF id")
    per_provision: int = Field(
        0, ge=0, description="charged to the provider per provision (0: statutory, free)"
    )
    monthly_fee: int = Field(0, ge=0, description="charged to every org of the catalog")

    @model_validator(mode="after")
    def _valid(self) -> ModelVersion:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self

    def in_force(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    def query_price(self, bpf: str, info: str) -> int:
        return self.procedures.get(bpf, self.items.get(info, self.per_query))


class CostModel(BaseModel):
    """Who is paid (``payee``), in what currency, and the price versions."""

    model_config = ConfigDict(extra="forbid")
    payee: str = Field(min_length=1)
    currency: str = Field(min_length=1)
    versions: list[ModelVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_overlap(self) -> CostModel:
        if len({v.version for v in self.versions}) != len(self.versions):
            raise ValueError("version numbers repeat")
        ordered = sorted(self.versions, key=lambda v: v.valid_from)
        for a, b in itertools.pairwise(ordered):
            if a.valid_to is None or a.valid_to > b.valid_from:
                raise ValueError(f"versions {a.version} and {b.version} overlap")
        return self

    def on(self, day: dt.date) -> ModelVersion:
        for v in self.versions:
            if v.in_force(day):
                return v
        raise ValueError(f"no version of the billing model is in force on {day.isoformat()}")

    def at(self, day: dt.date) -> ModelVersion | None:
        return next((v for v in self.versions if v.in_force(day)), None)

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class ModelFileError(YamlFileError):
    """A billing model file that cannot be used: ``file:line: field: what`` for each problem."""


def load_model(path: Path = DEFAULT_TARIFFS) -> CostModel:
    """The model in ``path``; raises :class:`ModelFileError` naming the line and field of every
    problem (or ``OSError``)."""
    try:
        doc = read_file(path, "rt")
    except ValueError as err:  # over a limit, not YAML, not UTF-8: already located
        raise ModelFileError(str(err)) from None
    try:
        return CostModel.model_validate(doc)
    except ValidationError as err:
        where = SourceMap(doc)
        problems = [
            f"{path}:{where.line(tuple(e['loc']))}: {format_path(tuple(e['loc'])) or '(top)'}:"
            f" {e['msg']}"
            for e in err.errors()
        ]
        raise ModelFileError("\n".join(problems)) from None


# -- the invoice --


class InvoiceLine(BaseModel):
    kind: Literal["query", "provision", "monthly_fee"]
    bpf: str = ""
    task: str = ""
    info: str = ""
    model_version: int
    charged: int = Field(description="provided attempts (the monthly fee: 1)")
    not_charged: dict[str, int] = Field(
        default_factory=dict, description="attempts shown, not charged, by outcome"
    )
    unit_price: int
    amount: int


class ChainRange(BaseModel):
    """The records of one keeper's chain an invoice read: how many, and the first and last."""

    keeper: str
    records: int
    first_seq: int
    last_seq: int
    first_hash: str
    last_hash: str


class InvoiceBody(BaseModel):
    """One org's invoice for one month, as computed from the records (and stored when issued)."""

    org: str
    month: str
    payee: str
    currency: str
    period_start: dt.datetime
    period_end: dt.datetime
    model_hash: str
    model_versions: list[int]
    lines: list[InvoiceLine]
    total: int
    chains: list[ChainRange]
    records_digest: str = Field(
        description="SHA-256 over every record and outcome read (keeper, seq, hash), in order"
    )


class Invoice(BaseModel):
    """An issued invoice: its number, its revision for the org and month, and its body."""

    number: int
    revision: int
    issued_at: dt.datetime
    body_hash: str
    body: InvoiceBody
    model: CostModel


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """``YYYY-MM`` → [start, end) in Japan's time zone."""
    try:
        first = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=JST)
    except ValueError:
        raise ValueError(f"month {month!r}: expected YYYY-MM") from None
    after = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    return first, after


def _body_hash(body: InvoiceBody) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# What billing reads of the records: no subject code, nothing personal. The hub's record of each
# attempt between two bodies, with its recorded outcome; and each provider's own record.
_QUERIES = """
SELECT r.requester AS org, r.bpf, r.task, r.info, r.outcome AS decision,
       (r.recorded_at AT TIME ZONE 'Asia/Tokyo')::date AS day,
       r.keeper, r.chain_seq, r.record_hash,
       o.outcome AS ended, o.chain_seq AS outcome_seq, o.outcome_hash
  FROM records.access_records r
  LEFT JOIN records.attempt_outcomes o ON o.attempt_key = r.attempt_key
 WHERE r.keeper = $3 AND r.requester <> r.provider AND r.chain_seq IS NOT NULL
   AND r.recorded_at >= $1 AND r.recorded_at < $2
   AND ($4::text[] IS NULL OR r.requester = ANY($4::text[]))
   AND NOT EXISTS (SELECT 1 FROM records.conformance_runs c
                   WHERE c.workflow_id = r.workflow_id AND c.run_id = r.run_id)
 ORDER BY r.chain_seq
"""
_PROVISIONS = """
SELECT r.provider AS org, r.bpf, r.task, r.info, r.outcome AS decision,
       (h.recorded_at AT TIME ZONE 'Asia/Tokyo')::date AS day,
       r.keeper, r.chain_seq, r.record_hash,
       o.outcome AS ended, o.chain_seq AS outcome_seq, o.outcome_hash
  FROM records.access_records r
  JOIN records.access_records h ON h.attempt_key = r.attempt_key AND h.keeper = $3
  LEFT JOIN records.attempt_outcomes o ON o.attempt_key = r.attempt_key
 WHERE r.keeper = r.provider AND r.requester <> r.provider AND r.chain_seq IS NOT NULL
   AND h.recorded_at >= $1 AND h.recorded_at < $2
   AND ($4::text[] IS NULL OR r.provider = ANY($4::text[]))
   AND NOT EXISTS (SELECT 1 FROM records.conformance_runs c
                   WHERE c.workflow_id = r.workflow_id AND c.run_id = r.run_id)
 ORDER BY r.keeper, r.chain_seq
"""


def _state(row: asyncpg.Record) -> str:
    """What became of an attempt: ``provided`` (charged) or why it is not charged."""
    if row["decision"] == "denied":
        return "denied"
    return str(row["ended"]) if row["ended"] is not None else "pending"


def _ranges(rows: Iterable[asyncpg.Record]) -> tuple[list[ChainRange], str]:
    by_keeper: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        by_keeper.setdefault(r["keeper"], []).append((r["chain_seq"], r["record_hash"]))
        if r["outcome_seq"] is not None:
            by_keeper.setdefault(OUTCOMES_CHAIN, []).append((r["outcome_seq"], r["outcome_hash"]))
    digest = hashlib.sha256()
    chains = []
    for keeper in sorted(by_keeper):
        seen = sorted(set(by_keeper[keeper]))
        for seq, h in seen:
            digest.update(f"{keeper}|{seq}|{h}\n".encode())
        chains.append(
            ChainRange(
                keeper=keeper,
                records=len(seen),
                first_seq=seen[0][0],
                last_seq=seen[-1][0],
                first_hash=seen[0][1],
                last_hash=seen[-1][1],
            )
        )
    return chains, digest.hexdigest()


async def compute(
    pool: asyncpg.Pool | Conn,
    month: str,
    model: CostModel,
    orgs: Iterable[str] | None = None,
    catalog_orgs: Iterable[str] = (),
) -> dict[str, InvoiceBody]:
    """Each org's invoice for ``month``, computed from the records under ``model`` (only
    ``orgs`` if given). An org gets an invoice when it has a query in the month, a charged
    provision, or (with a monthly fee) is one of ``catalog_orgs``. Raises ``ValueError`` when a
    day with records has no version of the model in force."""
    start, end = month_bounds(month)
    only = sorted(set(orgs)) if orgs is not None else None
    queries = await pool.fetch(_QUERIES, start, end, HUB, only)
    charging_provisions = any(v.per_provision for v in model.versions)
    provisions = await pool.fetch(_PROVISIONS, start, end, HUB, only) if charging_provisions else []

    lines: dict[str, dict[tuple[str, str, str, str, int], InvoiceLine]] = {}
    read: dict[str, list[asyncpg.Record]] = {}
    used: dict[str, set[int]] = {}
    for kind, rows in (("query", queries), ("provision", provisions)):
        for r in rows:
            version = model.on(r["day"])
            unit = (
                version.query_price(r["bpf"], r["info"])
                if kind == "query"
                else version.per_provision
            )
            if kind == "provision" and unit == 0:
                continue  # this version does not charge provisions: not on the provider's bill
            org = r["org"]
            read.setdefault(org, []).append(r)
            used.setdefault(org, set()).add(version.version)
            key = (kind, r["bpf"], r["task"], r["info"], version.version)
            line = lines.setdefault(org, {}).get(key) or InvoiceLine(
                kind=kind,
                bpf=r["bpf"],
                task=r["task"],
                info=r["info"],
                model_version=version.version,
                charged=0,
                unit_price=unit,
                amount=0,
            )
            state = _state(r)
            if state == "provided":
                line.charged += 1
                line.amount += unit
            else:
                line.not_charged[state] = line.not_charged.get(state, 0) + 1
            lines[org][key] = line

    first_day = start.date()
    fee_version = model.at(first_day)
    if fee_version is not None and fee_version.monthly_fee:
        for org in catalog_orgs:
            if only is not None and org not in only:
                continue
            used.setdefault(org, set()).add(fee_version.version)
            lines.setdefault(org, {})[("monthly_fee", "", "", "", fee_version.version)] = (
                InvoiceLine(
                    kind="monthly_fee",
                    model_version=fee_version.version,
                    charged=1,
                    unit_price=fee_version.monthly_fee,
                    amount=fee_version.monthly_fee,
                )
            )

    out: dict[str, InvoiceBody] = {}
    for org in sorted(lines):
        ordered = [lines[org][k] for k in sorted(lines[org])]
        for line in ordered:
            line.not_charged = dict(sorted(line.not_charged.items()))
        chains, digest = _ranges(read.get(org, []))
        out[org] = InvoiceBody(
            org=org,
            month=month,
            payee=model.payee,
            currency=model.currency,
            period_start=start,
            period_end=end,
            model_hash=model.digest(),
            model_versions=sorted(used.get(org, set())),
            lines=ordered,
            total=sum(x.amount for x in ordered),
            chains=chains,
            records_digest=digest,
        )
    return out


# -- issuing, reading, verifying --


def _from_row(row: asyncpg.Record) -> Invoice:
    return Invoice(
        number=row["number"],
        revision=row["revision"],
        issued_at=row["issued_at"],
        body_hash=row["body_hash"],
        body=InvoiceBody.model_validate(row["body"]),
        model=CostModel.model_validate(row["model"]),
    )


class Issued(BaseModel):
    invoice: Invoice
    new: bool = Field(description="False: the latest revision already said this")


async def issue(
    pool: asyncpg.Pool,
    month: str,
    model: CostModel,
    catalog_orgs: Iterable[str] = (),
    orgs: Iterable[str] | None = None,
) -> list[Issued]:
    """Issue ``month``'s invoices: for each org, a new revision when its invoice differs from
    the latest one issued (or none was), else the latest as it is. Stored invoices never
    change."""
    out: list[Issued] = []
    async with pool.acquire() as conn, conn.transaction():
        # Counted under the month's lock: a revision is never computed from older records than
        # the one before it.
        await records.lock_platform(conn, f"invoices {month}")
        bodies = await compute(conn, month, model, orgs, catalog_orgs)
        for org, body in bodies.items():
            digest = _body_hash(body)
            last = await conn.fetchrow(
                "SELECT * FROM billing.invoices WHERE org = $1 AND month = $2"
                " ORDER BY revision DESC LIMIT 1",
                org,
                month,
            )
            if last is not None and last["body_hash"] == digest:
                out.append(Issued(invoice=_from_row(last), new=False))
                continue
            row = await conn.fetchrow(
                "INSERT INTO billing.invoices (org, month, revision, body, body_hash, model)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                org,
                month,
                (last["revision"] if last else 0) + 1,
                body.model_dump(mode="json"),
                digest,
                model.model_dump(mode="json"),
            )
            assert row is not None  # INSERT … RETURNING
            out.append(Issued(invoice=_from_row(row), new=True))
    return out


async def get(pool: asyncpg.Pool, number: int) -> Invoice | None:
    row = await pool.fetchrow("SELECT * FROM billing.invoices WHERE number = $1", number)
    return _from_row(row) if row else None


async def listing(
    pool: asyncpg.Pool, month: str | None = None, org: str | None = None
) -> list[Invoice]:
    """Issued invoices (every revision), newest month first."""
    rows = await pool.fetch(
        "SELECT * FROM billing.invoices WHERE ($1::text IS NULL OR month = $1)"
        " AND ($2::text IS NULL OR org = $2) ORDER BY month DESC, org, revision",
        month,
        org,
    )
    return [_from_row(r) for r in rows]


class Check(BaseModel):
    """An invoice recomputed from the records: ``ok`` when they say what it says."""

    number: int
    org: str
    month: str
    revision: int
    ok: bool
    problems: list[str]


def _line_key(line: InvoiceLine) -> str:
    return f"{line.kind} {line.bpf}/{line.task}/{line.info} (model v{line.model_version})"


async def verify(
    pool: asyncpg.Pool, invoice: Invoice, catalog_orgs: Iterable[str] | None = None
) -> Check:
    """Recompute ``invoice`` from the records with the model it was issued with; every line,
    chain range and total that differs is a problem. ``catalog_orgs``: who owes the monthly fee
    (default: the org, if the invoice charged it one)."""
    problems: list[str] = []
    if _body_hash(invoice.body) != invoice.body_hash:
        problems.append("the stored invoice does not match its own hash")
    b = invoice.body
    if catalog_orgs is None:
        catalog_orgs = [b.org] if any(x.kind == "monthly_fee" for x in b.lines) else []
    try:
        fresh = (await compute(pool, b.month, invoice.model, [b.org], catalog_orgs)).get(b.org)
    except ValueError as err:
        fresh, problems = None, [*problems, str(err)]
    if fresh is None:
        fresh = b.model_copy(update={"lines": [], "total": 0, "chains": [], "records_digest": ""})
        problems.append("the records hold nothing billable for this org and month")
    was = {_line_key(x): x for x in b.lines}
    now = {_line_key(x): x for x in fresh.lines}
    for key in sorted(was.keys() | now.keys()):
        a, c = was.get(key), now.get(key)
        if a is None or c is None:
            problems.append(
                f"line {key}: {'only in the records' if a is None else 'not in the records'}"
            )
        elif a != c:
            problems.append(
                f"line {key}: invoice charges {a.charged} ({a.amount}), not charged"
                f" {a.not_charged}; records: {c.charged} ({c.amount}), not charged {c.not_charged}"
            )
    chains_was = {c.keeper: c for c in b.chains}
    chains_now = {c.keeper: c for c in fresh.chains}
    for keeper in sorted(chains_was.keys() | chains_now.keys()):
        a2, c2 = chains_was.get(keeper), chains_now.get(keeper)
        if a2 != c2:
            problems.append(f"chain {keeper}: invoice counts {_span(a2)}, the records {_span(c2)}")
    if b.total != fresh.total:
        problems.append(f"total: invoice {b.total}, records {fresh.total}")
    if b.records_digest != fresh.records_digest:
        problems.append("the records read differ from those the invoice counted")
    return Check(
        number=invoice.number,
        org=b.org,
        month=b.month,
        revision=invoice.revision,
        ok=not problems,
        problems=problems,
    )


async def verify_chains(
    pool: asyncpg.Pool, hub: Ed25519PublicKey, invoices: Iterable[Invoice]
) -> list[records.Break]:
    """Walk the chains ``invoices`` count (hashes, signatures, witnesses: as
    ``renkei records verify`` does), and the hub's chain of outcomes when they read it; the
    first broken link of each. With :func:`verify`: the invoice counts the records, and the
    records are the signed ones."""
    named = {c.keeper for inv in invoices for c in inv.body.chains}
    keepers = sorted(named - {OUTCOMES_CHAIN})
    breaks = list((await records.verify(pool, hub, keepers)).breaks) if keepers else []
    if OUTCOMES_CHAIN in named:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            found = await records.verify_outcomes(conn, await records.keyring(conn, hub))
        if found is not None:
            breaks.append(found)
    return breaks


def _span(c: ChainRange | None) -> str:
    return f"{c.records} records #{c.first_seq}..#{c.last_seq}" if c else "nothing"


def to_csv(invoice: InvoiceBody, number: int | None = None, revision: int | None = None) -> str:
    """The invoice as CSV: a header table, the lines, then the chain ranges (blank-line apart)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["invoice", "revision", "org", "month", "payee", "currency", "total", "model_hash"])
    w.writerow(
        [
            number if number is not None else "",
            revision if revision is not None else "",
            invoice.org,
            invoice.month,
            invoice.payee,
            invoice.currency,
            invoice.total,
            invoice.model_hash,
        ]
    )
    w.writerow([])
    w.writerow(["kind", "bpf", "task", "info", "model_version", "charged", *NOT_CHARGED,
                "unit_price", "amount"])  # fmt: skip
    for x in invoice.lines:
        w.writerow(
            [x.kind, x.bpf, x.task, x.info, x.model_version, x.charged,
             *(x.not_charged.get(s, 0) for s in NOT_CHARGED), x.unit_price, x.amount]
        )  # fmt: skip
    w.writerow([])
    fields = list(ChainRange.model_fields)
    w.writerow(fields)
    for c in invoice.chains:
        w.writerow([getattr(c, f) for f in fields])
    return out.getvalue()
