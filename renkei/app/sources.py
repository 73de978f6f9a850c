"""Loading a whitelist source: the shipped defaults, or a file an operator hands in.

A load replaces the source's rows in one transaction, is recorded (who, when, the file's
hash, what it changed), and is followed by the review of every operating BPF version at the
load's effective date (:mod:`renkei.bpf.review`). :class:`LoadReport` is what the command line
prints: the diff against the rows the load replaces, and the versions and executors affected.
"""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from renkei.bpf.models import did_you_mean
from renkei.bpf.review import Reviewed, review
from whitelist import store
from whitelist.annex2 import SOURCE as ANNEX2_SOURCE
from whitelist.annex2 import annex2_source, load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import JST
from whitelist.lawxml import read_law_xml
from whitelist.local import RETIRED_SOURCE, ordinances
from whitelist.models import Catalog, PeriodKind, Source, WhitelistRow
from whitelist.partners import SOURCE as PARTNERS_SOURCE
from whitelist.partners import load_partners, partners_source
from whitelist.sources import SourceFileError, SourceMeta, build_rows, read_rows_file


class LoadReport(BaseModel):
    """One load and its review."""

    outcome: store.LoadOutcome
    reviewed: list[Reviewed]

    @property
    def affected(self) -> list[Reviewed]:
        return [r for r in self.reviewed if r.affected]

    def lines(self) -> list[str]:
        o = self.outcome
        s = o.source
        if o.note is not None:  # a task's or an info item's period (set_period)
            return [
                o.note.removeprefix("~ "),
                f"load {o.load_id} by {s.loaded_by} (source {s.id}), whitelist version"
                f" {o.version}, effective {o.effective}",
                *self._review_lines(),
            ]
        out = [
            f"loaded {s.id} ({s.title}): {o.diff.unchanged + len(o.diff.added) + len(o.diff.changed)}"
            f" rows, in force {s.period()}; cited as {s.cite('{item}')}"
            + (f"; a stand-in from {s.stand_in_from}" if s.stand_in_from else ""),
            f"load {o.load_id} by {s.loaded_by}"
            + (f" as {s.body} (its own ordinance, 番号法第9条第2項)" if s.body else "")
            + f", file hash {s.content_hash[:16]}…,"
            f" whitelist version {o.version}, effective {o.effective}",
        ]
        if o.closed is not None:
            out.append(f"{o.closed.id} ({o.closed.title}) now ends on {o.closed.valid_to}")
        d = o.diff
        against = f"against {d.against}" if d.against else "(a new source: every row is added)"
        out.append(
            f"diff {against}: {len(d.added)} added, {len(d.removed)} removed,"
            f" {len(d.changed)} changed, {d.unchanged} unchanged"
        )
        out += [f"  {line}" for line in d.lines()]
        return out + self._review_lines()

    def _review_lines(self) -> list[str]:
        o = self.outcome
        out: list[str] = []
        affected = self.affected
        out.append(
            f"review from {o.effective}: {len(self.reviewed)} operating versions,"
            f" {len(affected)} affected"
        )
        out += [f"  {r.line()}" for r in affected]
        executors = sorted({e for r in affected for e in r.executors})
        if executors:
            out.append(f"executors affected: {', '.join(executors)}")
        definers = sorted({r.definer for r in affected})
        if definers:
            out.append(f"written to the outbox of: {', '.join(definers)}")
        return out


def os_user() -> str:
    """Who loads, when the command line does not say (``--by``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def effective_date(source: Source, today: dt.date | None = None) -> dt.date:
    """From when a load counts: the source's first day, or today if that has passed."""
    day = today or dt.datetime.now(JST).date()
    return max(source.valid_from, day)


async def load(
    pool: asyncpg.Pool,
    catalog: Catalog,
    source: Source,
    rows: list[WhitelistRow],
    *,
    file_name: str,
    hub: Ed25519PrivateKey,
    today: dt.date | None = None,
) -> LoadReport:
    """Load ``source`` with ``rows`` (sealed with ``hub``, the hub's key: :mod:`whitelist.seal`),
    then review every operating version."""
    outcome = await store.load_source(
        pool, source, rows, file_name=file_name, effective=effective_date(source, today), hub=hub
    )
    return LoadReport(outcome=outcome, reviewed=await review(pool, catalog, outcome, today))


class SourceOptions(BaseModel):
    """What the command line says about the source (over what the file says)."""

    title: str | None = None
    citation: str | None = None
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    supersedes: str | None = None
    stand_in_from: dt.date | None = None
    stand_in_note: str | None = None
    mapping: Path | None = None


async def load_file(
    pool: asyncpg.Pool,
    source_id: str,
    path: Path,
    options: SourceOptions,
    by: str,
    *,
    hub: Ed25519PrivateKey,
    as_org: str | None = None,
    catalog: Catalog | None = None,
    today: dt.date | None = None,
) -> LoadReport:
    """Load the rows file (CSV, YAML, or law XML with a mapping) as source ``source_id``.

    ``as_org``: the body the load is made as. A body's own ordinance (``body:``) is loaded only
    as that body, and a body loads nothing else (:func:`check_body`).

    Raises :class:`~whitelist.sources.SourceFileError` (located) or
    :class:`~whitelist.store.SourceRefused`; nothing is loaded then.
    """
    cat = catalog or default_catalog()
    stored = {s.id: s for s in await store.fetch_sources(pool)}
    where: dict[str, str] = {}
    if path.suffix.lower() == ".xml":
        imported = read_law_xml(path, options.mapping, cat)
        meta, specs, content_hash = imported.meta, imported.rows, imported.content_hash
    else:
        rows_file = read_rows_file(path)
        meta, specs, content_hash = rows_file.meta, rows_file.rows, rows_file.content_hash
        where = rows_file.where
    given = {k: v for k, v in options.model_dump(exclude={"mapping"}).items() if v is not None}
    merged = SourceMeta(**{**meta.model_dump(exclude_none=True), **given})
    before = stored.get(source_id)
    title = merged.title or (before.title if before else None)
    citation = merged.citation or (before.citation if before else None)
    valid_from = merged.valid_from or (before.valid_from if before else None)
    missing = [
        f"--{name}"
        for name, value in (("title", title), ("citation", citation), ("valid-from", valid_from))
        if value is None
    ]
    if missing:
        raise SourceFileError(
            [
                f"{path}: a new source needs {', '.join(missing)} (on the command line or in the file)"
            ]
        )
    assert title is not None and citation is not None and valid_from is not None
    body = merged.body or (before.body if before else None)
    check_body(cat, source_id, before, body, as_org, where.get("body", str(path)))
    supersedes = merged.supersedes or (before.supersedes if before else None)
    ended = stored.get(supersedes) if supersedes else None
    if ended is not None and ended.body != body:  # one body's law never ends another's
        raise SourceFileError(
            [
                f"{where.get('supersedes', str(path))}: supersedes: {ended.id} is"
                f" {store.owner_of(ended)}; source {source_id!r} cannot end it"
            ]
        )
    try:
        source = Source(
            id=source_id,
            title=title,
            citation=citation,
            valid_from=valid_from,
            valid_to=merged.valid_to if merged.valid_to else (before.valid_to if before else None),
            stand_in_from=merged.stand_in_from or (before.stand_in_from if before else None),
            stand_in_note=merged.stand_in_note or (before.stand_in_note if before else None),
            supersedes=merged.supersedes or (before.supersedes if before else None),
            body=body,
            content_hash=content_hash,
            loaded_by=by,
        )
    except ValueError as err:
        raise SourceFileError([f"{path}: source {source_id!r}: {err}"]) from None
    rows = build_rows(source, specs, cat)
    return await load(pool, cat, source, rows, file_name=path.name, hub=hub, today=today)


async def set_period(
    pool: asyncpg.Pool,
    kind: PeriodKind,
    ident: str,
    valid_from: dt.date | None,
    valid_to: dt.date | None,
    by: str,
    *,
    hub: Ed25519PrivateKey,
    catalog: Catalog | None = None,
    today: dt.date | None = None,
) -> LoadReport:
    """Set the period of a task or an info item in the live registry, then review every
    operating version as after a load. Raises :class:`~whitelist.store.SourceRefused` for an
    id the catalog does not know or a period that ends before it begins."""
    cat = catalog or default_catalog()
    known = cat.tasks if kind == "task" else cat.info_items
    if ident not in known:
        raise store.SourceRefused(f"unknown {kind} {ident!r}{did_you_mean(ident, known)}")
    day = today or dt.datetime.now(JST).date()
    outcome = await store.set_period(
        pool, kind, ident, valid_from, valid_to, by=by, effective=day, hub=hub
    )
    return LoadReport(outcome=outcome, reviewed=await review(pool, cat, outcome, today))


# The kinds of body that make ordinances of their own (地方公共団体).
LOCAL_GOVERNMENTS = ("municipal", "prefectural")


def check_body(
    catalog: Catalog,
    source_id: str,
    before: Source | None,
    body: str | None,
    as_org: str | None,
    where: str,
) -> None:
    """Refuse (located at ``where``, the file's ``body:`` line) a load of one body's ordinance
    made as anyone but that body, a body's load of anything but its own ordinance, and a load
    that would hand a source to another body (or make national law a body's)."""
    problems: list[str] = []
    if before is not None and before.body != body:
        problems.append(
            f"{where}: body: source {source_id!r} is {store.owner_of(before)};"
            f" this file would make it {body or 'national law'}'s"
        )
    elif body is not None and as_org != body:
        made_as = f"as {as_org}" if as_org else "by a platform operator, for no body"
        problems.append(
            f"{where}: body: source {source_id!r} is {body}'s own ordinance (番号法第9条第2項):"
            f" only {body} loads or replaces its rows, and this load is made {made_as}"
        )
    elif body is None and as_org is not None:
        problems.append(
            f"{where}: loading as {as_org}: a body loads only its own ordinance, and this file"
            f" names none (`body: {as_org}`)"
        )
    if body is not None:
        org = catalog.orgs.get(body)
        if org is None or org.kind not in LOCAL_GOVERNMENTS:
            problems.append(
                f"{where}: body: {body!r} is not a local government of the org registry"
                " (an ordinance under 番号法第9条第2項 is a municipality's or a prefecture's)"
            )
    if problems:
        raise SourceFileError(problems)


async def load_defaults(
    pool: asyncpg.Pool, by: str | None = None, *, hub: Ed25519PrivateKey
) -> tuple[int, int, list[LoadReport]]:
    """Load the shipped sources (the 2015 table, each sample city's ordinance, the partner rows)
    where the store differs from them, and retire the shared local rows a store may still hold;
    return (rows, whitelist version, the loads made)."""
    catalog = default_catalog()
    stored = {s.id: s for s in await store.fetch_sources(pool)}
    total = 0
    version: int = await pool.fetchval("SELECT version FROM whitelist.version")
    reports: list[LoadReport] = []
    who = by or os_user()
    shipped = (
        (ANNEX2_SOURCE, annex2_source(), load_annex2(catalog)),
        *((s.id, s, rows) for s, rows in ordinances(catalog)),
        (PARTNERS_SOURCE, partners_source(), load_partners(catalog)),
    )
    for sid, source, rows in shipped:
        total += len(rows)
        have = stored.get(sid)
        kept = await store.fetch_rows(pool, "source = $1", sid)
        if (
            have is not None
            and have.content_hash == source.content_hash
            and sorted(kept, key=lambda r: r.id) == sorted(rows, key=lambda r: r.id)
        ):
            continue
        report = await load(
            pool,
            catalog,
            source.model_copy(update={"loaded_by": who}),
            rows,
            file_name=sid,
            hub=hub,
        )
        version = report.outcome.version
        reports.append(report)
    retired = stored.get(RETIRED_SOURCE)
    if retired is not None and await store.fetch_rows(pool, "source = $1", RETIRED_SOURCE):
        # Its rows now live in each body's own ordinance: a recorded load of no rows.
        report = await load(
            pool,
            catalog,
            retired.model_copy(update={"loaded_by": who, "content_hash": ""}),
            [],
            file_name=f"{RETIRED_SOURCE} (retired: each body's ordinance is a source of its own)",
            hub=hub,
        )
        version = report.outcome.version
        reports.append(report)
    return total, version, reports
