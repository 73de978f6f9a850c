"""The review (見直し) of every operating BPF version after a change of the law.

After a whitelist source is loaded, every operating version is validated again against the new
whitelist at the load's effective date. Each outcome is recorded (``registry.reviews``); a
version the load touches — the rows its queries name changed, or it no longer conforms — is
*affected*, and its definer finds a message in its outbox listing the version, its executors and
the problems. A version found non-conformant admits no new run from the effective date on
(:func:`suspension`), unless a later review finds it conformant again; a newer operating version
of the same BPF (a replacement) starts instead, since a start without a version runs the newest
operating one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence

import asyncpg
from pydantic import BaseModel

from renkei.bpf import registry
from renkei.bpf.loader import LoadedBpf
from renkei.bpf.models import BpfDefinition, QueryStep, walk
from renkei.bpf.validation import KnownBpfs, validate
from whitelist import store
from whitelist.decide import JST, WhitelistIndex
from whitelist.models import Catalog, role_of
from whitelist.store import LoadOutcome


class Reviewed(BaseModel):
    """One operating version after a load: from which day (if any) it no longer conforms."""

    bpf: str
    version: int
    definer: str
    executors: list[str]
    stops_on: dt.date | None = None
    affected: bool
    problems: list[str]

    @property
    def conformant(self) -> bool:
        return self.stops_on is None

    def line(self) -> str:
        head = f"{self.bpf} v{self.version} (executors: {', '.join(self.executors)})"
        if self.stops_on is not None:
            return (
                f"{head}: does not conform from {self.stops_on}; it admits no new run from then"
                " on:" + "".join(f"\n      {p}" for p in self.problems)
            )
        return f"{head}: conforms; rows its queries name changed"


class Suspension(BaseModel):
    """Why a version admits no new run: the load after which it does not conform on a day."""

    source: str
    effective: dt.date
    problems: list[str]

    def reason(self, bpf: str, version: int) -> str:
        first = self.problems[0] if self.problems else "it does not validate"
        return (
            f"{bpf} v{version} does not conform to the whitelist from {self.effective}"
            f" ({self.source}): it admits no new run from then on ({first})"
        )


# What a review records of a version whose stored definition no longer has its content hash.
ALTERED = (
    "its registered definition was changed in the database since it was registered (it no"
    " longer has its content hash)"
)


def _timeline(
    loaded: LoadedBpf,
    catalog: Catalog,
    index: WhitelistIndex,
    days: Sequence[dt.date],
    known: KnownBpfs,
) -> list[tuple[dt.date, list[str]]]:
    """The errors validation finds in ``loaded`` against ``index`` on each of ``days``."""
    return [
        (
            day,
            [
                str(i)
                for i in validate(loaded, catalog, index, at=day, known=known)
                if i.severity == "error"
            ],
        )
        for day in days
    ]


async def _altered(pool: asyncpg.Pool, row: asyncpg.Record, since: dt.date) -> Reviewed:
    """The review of a version changed in the database since it was registered: it conforms on
    no day (a review is recorded, so an earlier review's verdict does not stand in for it), and
    its recorded definers are told (registry.owners: its content does not name them now)."""
    kept = await registry.ownership(pool, row["bpf"])
    return Reviewed(
        bpf=row["bpf"],
        version=row["version"],
        definer=kept.definer if kept else "",
        executors=[],
        stops_on=since,
        affected=True,
        problems=[ALTERED],
    )


def _loaded(row: asyncpg.Record) -> LoadedBpf | None:
    """The version's registered content, checked against its hash, with its source text while
    it is that content's (``None``: changed in the database since; it runs nowhere, and a
    review of another content would say nothing of it)."""
    return registry.registered_content(row)


def purposes(d: BpfDefinition, catalog: Catalog) -> set[tuple[str, str, str]]:
    """(requester role, task, info) of every query the definition makes, for every role its
    executors may hold."""
    roles: set[str] = set()
    for e in d.owners.executors:
        role = role_of(e)
        roles |= {role} if role is not None else catalog.org_roles(e)
    infos = {s.query.info for s in walk(d.steps) if isinstance(s, QueryStep)}
    return {(r, d.task, i) for r in roles for i in infos}


def cause(index: WhitelistIndex, day: dt.date, loaded: str) -> str:
    """What changes the law on ``day``: the sources that begin or end then, else the load."""
    begins = sorted(s.id for s in index.sources.values() if s.valid_from == day)
    ends = sorted(s.id for s in index.sources.values() if s.valid_to == day)
    said = [f"source {i} begins" for i in begins] + [f"source {i} ends" for i in ends]
    for (kind, ident), held in sorted(index.periods.items()):
        what = "task" if kind == "task" else "info item"
        if held.valid_from == day:
            said.append(f"{what} {ident} begins")
        if held.valid_to == day:
            said.append(f"{what} {ident} ends")
    return ", ".join(said) if said else f"source {loaded} loaded"


def checkpoints(index: WhitelistIndex, since: dt.date, effective: dt.date) -> list[dt.date]:
    """The days on which the law the store holds may change from ``since`` on: ``since``, the
    load's effective day, and every later first or last day of a source, a row, a task or an
    info item."""
    days = {since, effective}
    for src in index.sources.values():
        days |= {d for d in (src.valid_from, src.valid_to) if d is not None}
    for row in index.rows():
        days |= {d for d in (row.valid_from, row.valid_to) if d is not None}
    for held in index.periods.values():  # a task's or an info item's period
        days |= {d for d in (held.valid_from, held.valid_to) if d is not None}
    return sorted(d for d in days if d >= since)


async def review(
    pool: asyncpg.Pool, catalog: Catalog, outcome: LoadOutcome, today: dt.date | None = None
) -> list[Reviewed]:
    """Validate every operating version against the store's whitelist on the day of the load
    (``today``), at the load's effective date and on every later day the law changes; record
    each outcome and write the affected versions to their definers' outboxes."""
    index = await store.load_index(pool)
    known = await registry.known(pool)
    rows = await pool.fetch(
        "SELECT bpf, version, definition, content_hash, source_name, source_text"
        " FROM registry.bpf_versions WHERE state = 'operating' ORDER BY bpf, version"
    )
    since = min(today or dt.datetime.now(JST).date(), outcome.effective)
    days = checkpoints(index, since, outcome.effective)
    touched = outcome.diff.purposes()
    out: list[Reviewed] = []
    timelines: list[list[tuple[dt.date, list[str]]]] = []
    for row in rows:
        loaded = _loaded(row)
        if loaded is None:  # changed in the database: no conformance is judged of it
            out.append(await _altered(pool, row, since))
            timelines.append([(day, [ALTERED]) for day in days])
            continue
        d = loaded.definition
        timeline = _timeline(loaded, catalog, index, days, known)
        stops = next(((day, p) for day, p in timeline if p and day >= outcome.effective), None)
        stops = stops or next(((day, p) for day, p in timeline if p), None)
        before = await _previous(pool, d.bpf, d.version, outcome.load_id)
        # Affected: the rows its queries name changed, or its conformance did on some day (a
        # stop an earlier load already announced is not announced again).
        changed = any(bool(p) != before(day) for day, p in timeline)
        out.append(
            Reviewed(
                bpf=d.bpf,
                version=d.version,
                definer=d.owners.definer,
                executors=list(d.owners.executors),
                stops_on=stops[0] if stops else None,
                affected=changed or bool(purposes(d, catalog) & touched),
                problems=stops[1] if stops else [],
            )
        )
        timelines.append(timeline)
    await _record(pool, outcome, out, timelines, index)
    return out


async def _previous(
    pool: asyncpg.Pool, bpf: str, version: int, load_id: int
) -> Callable[[dt.date], bool]:
    """Whether the version's review before load ``load_id`` found it non-conformant on a day."""
    rows = await pool.fetch(
        "SELECT effective, conformant FROM registry.reviews WHERE bpf = $1 AND version = $2"
        " AND load_id = (SELECT max(load_id) FROM registry.reviews"
        "  WHERE bpf = $1 AND version = $2 AND load_id < $3) ORDER BY effective",
        bpf,
        version,
        load_id,
    )

    def stopped(day: dt.date) -> bool:
        last = [r["conformant"] for r in rows if r["effective"] <= day]
        return bool(last) and not last[-1]

    return stopped


async def _record(
    pool: asyncpg.Pool,
    outcome: LoadOutcome,
    reviewed: Sequence[Reviewed],
    timelines: Sequence[Sequence[tuple[dt.date, list[str]]]],
    index: WhitelistIndex,
) -> None:
    src = outcome.source
    async with pool.acquire() as conn, conn.transaction():
        for r, timeline in zip(reviewed, timelines, strict=True):
            for day, problems in timeline:
                await conn.execute(
                    "INSERT INTO registry.reviews (load_id, source, bpf, version, effective,"
                    " conformant, affected, executors, problems)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb)",
                    outcome.load_id,
                    cause(index, day, src.id),
                    r.bpf,
                    r.version,
                    day,
                    not problems,
                    r.affected,
                    r.executors,
                    json.dumps(problems, ensure_ascii=False),
                )
            if not r.affected:
                continue
            # The definer's outbox (renkei.app.outbox): no subject, the version is the "flow".
            note = (
                f"whitelist source {src.id} ({src.title}) loaded by {src.loaded_by}"
                f" (load {outcome.load_id}, effective {outcome.effective}): " + r.line()
            )
            deadline = dt.datetime.combine(r.stops_on or outcome.effective, dt.time(), tzinfo=JST)
            await conn.execute(
                "INSERT INTO hub.reminders (workflow_id, step, executor, subject_code, deadline,"
                " kind, note) VALUES ($1, $2, $3, '', $4, 'review', $5)"
                " ON CONFLICT (workflow_id, step) DO NOTHING",
                f"{r.bpf}/v{r.version}",
                f"review-{outcome.load_id}",
                r.definer,
                deadline,
                note,
            )


async def review_version(
    pool: asyncpg.Pool, catalog: Catalog, bpf: str, version: int, today: dt.date | None = None
) -> Reviewed | None:
    """Review one version just put into operation against the store's whitelist, from today
    on every day the law changes, as the newest load's review (``None`` if nothing was ever
    loaded): a version operated after a load that changes the law later stops then too, and one
    whose definition was changed in the database since it was registered conforms on no day."""
    load = await pool.fetchrow(
        "SELECT l.id, l.source, l.effective FROM whitelist.loads l ORDER BY l.id DESC LIMIT 1"
    )
    row = await pool.fetchrow(
        "SELECT bpf, version, definition, content_hash, source_name, source_text"
        " FROM registry.bpf_versions WHERE bpf = $1 AND version = $2",
        bpf,
        version,
    )
    if load is None or row is None:
        return None
    index = await store.load_index(pool)
    known = await registry.known(pool)
    day0 = today or dt.datetime.now(JST).date()
    loaded = _loaded(row)
    days = checkpoints(index, day0, day0)
    if loaded is None:  # changed in the database: recorded as conforming on no day
        reviewed = await _altered(pool, row, day0)
        timeline = [(day, [ALTERED]) for day in days]
    else:
        timeline = _timeline(loaded, catalog, index, days, known)
        stops = next(((day, p) for day, p in timeline if p), None)
        d = loaded.definition
        reviewed = Reviewed(
            bpf=d.bpf,
            version=d.version,
            definer=d.owners.definer,
            executors=list(d.owners.executors),
            stops_on=stops[0] if stops else None,
            affected=False,
            problems=stops[1] if stops else [],
        )
    async with pool.acquire() as conn, conn.transaction():
        for day, problems in timeline:
            await conn.execute(
                "INSERT INTO registry.reviews (load_id, source, bpf, version, effective,"
                " conformant, affected, executors, problems)"
                " VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8::text::jsonb)",
                load["id"],
                cause(index, day, load["source"]),
                reviewed.bpf,
                reviewed.version,
                day,
                not problems,
                reviewed.executors,
                json.dumps(problems, ensure_ascii=False),
            )
    return reviewed


async def suspension(
    pool: asyncpg.Pool | asyncpg.Connection, bpf: str, version: int, on: dt.date
) -> Suspension | None:
    """Why ``bpf`` v``version`` admits no run on ``on``, if it does not: the newest load's
    review found it non-conformant on the last day it checked on or before ``on`` (each review
    checks every day the law changes from the load's day on)."""
    row = await pool.fetchrow(
        "SELECT source, effective, conformant, problems::text AS problems FROM registry.reviews"
        " WHERE bpf = $1 AND version = $2 AND effective <= $3 AND load_id = (SELECT max(load_id)"
        " FROM registry.reviews WHERE bpf = $1 AND version = $2)"
        " ORDER BY effective DESC, id DESC LIMIT 1",
        bpf,
        version,
        on,
    )
    if row is None or row["conformant"]:
        return None
    return Suspension(
        source=row["source"], effective=row["effective"], problems=json.loads(row["problems"])
    )
