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
from collections.abc import Sequence

import asyncpg
from pydantic import BaseModel

from renkei.bpf import registry
from renkei.bpf.loader import BpfFileError, LoadedBpf, parse_text
from renkei.bpf.models import BpfDefinition, QueryStep, walk
from renkei.bpf.validation import validate
from whitelist import store
from whitelist.decide import JST
from whitelist.models import Catalog, role_of
from whitelist.store import LoadOutcome


class Reviewed(BaseModel):
    """One operating version after a load."""

    bpf: str
    version: int
    definer: str
    executors: list[str]
    conformant: bool
    affected: bool
    problems: list[str]

    def line(self, effective: dt.date) -> str:
        head = f"{self.bpf} v{self.version} (executors: {', '.join(self.executors)})"
        if not self.conformant:
            return (
                f"{head}: does not conform from {effective}; it admits no new run from then on:"
                + "".join(f"\n      {p}" for p in self.problems)
            )
        return f"{head}: conforms; rows its queries name changed"


class Suspension(BaseModel):
    """Why a version admits no new run: the load that made it non-conformant."""

    source: str
    effective: dt.date
    problems: list[str]

    def reason(self, bpf: str, version: int) -> str:
        first = self.problems[0] if self.problems else "it does not validate"
        return (
            f"{bpf} v{version} does not conform to the whitelist from {self.effective}"
            f" (source {self.source} loaded): it admits no new run from then on ({first})"
        )


def _loaded(row: asyncpg.Record) -> LoadedBpf:
    try:
        return parse_text(row["source_text"], row["source_name"])
    except BpfFileError:  # an older shape of the format: no lines, same checks
        return LoadedBpf(
            definition=BpfDefinition.model_validate(row["definition"]),
            source_name=row["source_name"],
            source_text=row["source_text"],
            content_hash=row["content_hash"],
        )


def purposes(d: BpfDefinition, catalog: Catalog) -> set[tuple[str, str, str]]:
    """(requester role, task, info) of every query the definition makes, for every role its
    executors may hold."""
    roles: set[str] = set()
    for e in d.owners.executors:
        role = role_of(e)
        roles |= {role} if role is not None else catalog.org_roles(e)
    infos = {s.query.info for s in walk(d.steps) if isinstance(s, QueryStep)}
    return {(r, d.task, i) for r in roles for i in infos}


async def review(pool: asyncpg.Pool, catalog: Catalog, outcome: LoadOutcome) -> list[Reviewed]:
    """Validate every operating version at ``outcome.effective`` against the store's whitelist,
    record each outcome and write the affected versions to their definers' outboxes."""
    index = await store.load_index(pool)
    known = await registry.known(pool)
    rows = await pool.fetch(
        "SELECT bpf, version, definition, content_hash, source_name, source_text"
        " FROM registry.bpf_versions WHERE state = 'operating' ORDER BY bpf, version"
    )
    touched = outcome.diff.purposes()
    out: list[Reviewed] = []
    for row in rows:
        loaded = _loaded(row)
        d = loaded.definition
        issues = validate(loaded, catalog, index, at=outcome.effective, known=known)
        problems = [str(i) for i in issues if i.severity == "error"]
        out.append(
            Reviewed(
                bpf=d.bpf,
                version=d.version,
                definer=d.owners.definer,
                executors=list(d.owners.executors),
                conformant=not problems,
                affected=bool(problems) or bool(purposes(d, catalog) & touched),
                problems=problems,
            )
        )
    await _record(pool, outcome, out)
    return out


async def _record(pool: asyncpg.Pool, outcome: LoadOutcome, reviewed: Sequence[Reviewed]) -> None:
    deadline = dt.datetime.combine(outcome.effective, dt.time(), tzinfo=JST)
    src = outcome.source
    async with pool.acquire() as conn, conn.transaction():
        for r in reviewed:
            await conn.execute(
                "INSERT INTO registry.reviews (load_id, source, bpf, version, effective,"
                " conformant, affected, executors, problems)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb)",
                outcome.load_id,
                src.id,
                r.bpf,
                r.version,
                outcome.effective,
                r.conformant,
                r.affected,
                r.executors,
                json.dumps(r.problems, ensure_ascii=False),
            )
            if not r.affected:
                continue
            # The definer's outbox (renkei.app.outbox): no subject, the version is the "flow".
            note = (
                f"whitelist source {src.id} ({src.title}) loaded by {src.loaded_by}"
                f" (load {outcome.load_id}, effective {outcome.effective}): "
                + r.line(outcome.effective)
            )
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


async def suspension(
    pool: asyncpg.Pool | asyncpg.Connection, bpf: str, version: int, on: dt.date
) -> Suspension | None:
    """The load that stops ``bpf`` v``version`` admitting runs on ``on``, if any: its newest
    review found it non-conformant at an effective date on or before ``on``."""
    row = await pool.fetchrow(
        "SELECT source, effective, conformant, problems::text AS problems FROM registry.reviews"
        " WHERE bpf = $1 AND version = $2 AND effective <= $3 ORDER BY id DESC LIMIT 1",
        bpf,
        version,
        on,
    )
    if row is None or row["conformant"]:
        return None
    return Suspension(
        source=row["source"], effective=row["effective"], problems=json.loads(row["problems"])
    )
