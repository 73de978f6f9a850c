"""The PIA registry and the suspensions in PostgreSQL, and the live index workers decide with.

Every change is a row appended to ``controls.pia_events`` or ``controls.suspension_events``
(migrations 0020, 0021: never updated, never deleted), in one transaction with a bump of
``controls.version`` and a ``NOTIFY`` on ``renkei_controls``. :class:`LiveControls` holds a
:class:`~whitelist.controls.ControlsIndex` and swaps in a fresh one on that channel's notice; the
:class:`~whitelist.store.LiveWhitelist` it belongs to listens for both, on one connection
(:mod:`whitelist.live`), so a PIA withdrawn or an org suspended reaches every running worker
without a restart, and no decision waits on the database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from whitelist.controls import ControlsIndex, Pia, Side, Suspension, SuspensionKind
from whitelist.live import Followed

CHANNEL = "renkei_controls"
log = logging.getLogger(__name__)

Conn = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
_PIA = "org, task, level, approved_on, review_due, status, note, recorded_by, recorded_at"
_SUSPENSION = "kind, target, version, side, reason, operator, at"


class ControlRefused(ValueError):
    """A change the registry does not take, and why (e.g. withdrawing a PIA never recorded)."""


class PiaEvent(Pia):
    """One change of the PIA registry, with its place in the history."""

    seq: int


class SuspensionEvent(Suspension):
    """One suspension or lift, with its place in the history."""

    seq: int
    action: str


def _fields(row: asyncpg.Record | None) -> dict[str, Any]:
    """The columns of a row an INSERT … RETURNING gave back (it always gives one)."""
    assert row is not None
    return dict(row)


async def _bump(conn: Conn) -> int:
    version: int = await conn.fetchval(
        "UPDATE controls.version SET version = version + 1, changed_at = now() RETURNING version"
    )
    await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", str(version))
    return version


async def set_pia(pool: asyncpg.Pool, pia: Pia, recorded_by: str) -> tuple[Pia, int]:
    """Record ``pia`` as the PIA in force for its (org, task); (as recorded, new version)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO controls.pia_events"
            " (org, task, level, approved_on, review_due, status, note, recorded_by)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_PIA}",
            pia.org,
            pia.task,
            pia.level,
            pia.approved_on,
            pia.review_due,
            pia.status,
            pia.note,
            recorded_by,
        )
        return Pia(**_fields(row)), await _bump(conn)


async def withdraw_pia(
    pool: asyncpg.Pool, org: str, task: str, reason: str, recorded_by: str
) -> tuple[Pia, int]:
    """Withdraw the PIA of (org, task): a new event, the old ones kept."""
    async with pool.acquire() as conn, conn.transaction():
        # One writer at a time (the version row is locked): the PIA read is the one withdrawn.
        version = await _bump(conn)
        current = await conn.fetchrow(
            f"SELECT {_PIA} FROM controls.pias WHERE org = $1 AND task = $2", org, task
        )
        if current is None:
            raise ControlRefused(f"{org} has no PIA recorded for task {task!r}")
        if current["status"] == "withdrawn":
            raise ControlRefused(f"{org}'s PIA for task {task!r} is already withdrawn")
        row = await conn.fetchrow(
            "INSERT INTO controls.pia_events"
            " (org, task, level, approved_on, review_due, status, note, recorded_by)"
            f" VALUES ($1, $2, $3, $4, $5, 'withdrawn', $6, $7) RETURNING {_PIA}",
            org,
            task,
            current["level"],
            current["approved_on"],
            current["review_due"],
            reason,
            recorded_by,
        )
        return Pia(**_fields(row)), version


async def seed_pias(pool: asyncpg.Pool, pias: Sequence[Pia], recorded_by: str) -> int:
    """Record each PIA whose (org, task) has no history yet (a withdrawal or a change made since
    stays as it is); return how many were recorded."""
    async with pool.acquire() as conn, conn.transaction():
        known = {
            (r["org"], r["task"])
            for r in await conn.fetch("SELECT DISTINCT org, task FROM controls.pia_events")
        }
        fresh = [p for p in pias if (p.org, p.task) not in known]
        if not fresh:
            return 0
        await conn.executemany(
            "INSERT INTO controls.pia_events"
            " (org, task, level, approved_on, review_due, status, note, recorded_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (p.org, p.task, p.level, p.approved_on, p.review_due, p.status, p.note, recorded_by)
                for p in fresh
            ],
        )
        await _bump(conn)
        return len(fresh)


async def pias(conn: Conn, org: str | None = None, task: str | None = None) -> list[Pia]:
    """The PIAs in force (each (org, task)'s latest event), optionally of one org or task."""
    rows = await conn.fetch(
        f"SELECT {_PIA} FROM controls.pias WHERE ($1::text IS NULL OR org = $1)"
        " AND ($2::text IS NULL OR task = $2) ORDER BY org, task",
        org,
        task,
    )
    return [Pia(**dict(r)) for r in rows]


async def pia_history(conn: Conn, org: str, task: str) -> list[PiaEvent]:
    """Every change of (org, task)'s PIA, the oldest first."""
    rows = await conn.fetch(
        f"SELECT seq, {_PIA} FROM controls.pia_events WHERE org = $1 AND task = $2 ORDER BY seq",
        org,
        task,
    )
    return [PiaEvent(**dict(r)) for r in rows]


async def suspend(
    pool: asyncpg.Pool,
    kind: SuspensionKind,
    target: str,
    reason: str,
    operator: str,
    *,
    version: int | None = None,
    side: Side | None = None,
) -> tuple[Suspension, int]:
    """Suspend ``target`` from now (a suspension already in force is replaced: its side, its
    reason); (the suspension, new version)."""
    if kind == "org" and side is None:
        side = "both"
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO controls.suspension_events"
            " (kind, target, version, side, action, reason, operator)"
            f" VALUES ($1, $2, $3, $4, 'suspend', $5, $6) RETURNING {_SUSPENSION}",
            kind,
            target,
            version if kind == "bpf" else None,
            side if kind == "org" else None,
            reason,
            operator,
        )
        return Suspension(**_fields(row)), await _bump(conn)


async def lift(
    pool: asyncpg.Pool,
    kind: SuspensionKind,
    target: str,
    reason: str,
    operator: str,
    *,
    version: int | None = None,
) -> tuple[SuspensionEvent, int]:
    """Lift the suspension of ``target`` from now; :class:`ControlRefused` if none is in force."""
    async with pool.acquire() as conn, conn.transaction():
        # One writer at a time: the suspension found is still the one in force when lifted.
        version_now = await _bump(conn)
        current = await conn.fetchrow(
            "SELECT 1 FROM controls.suspensions WHERE kind = $1 AND target = $2"
            " AND version IS NOT DISTINCT FROM $3",
            kind,
            target,
            version if kind == "bpf" else None,
        )
        if current is None:
            what = f"{target} v{version}" if kind == "bpf" else target
            raise ControlRefused(f"no suspension of {kind} {what} is in force")
        row = await conn.fetchrow(
            "INSERT INTO controls.suspension_events"
            " (kind, target, version, side, action, reason, operator)"
            " VALUES ($1, $2, $3, NULL, 'lift', $4, $5)"
            f" RETURNING seq, action, {_SUSPENSION}",
            kind,
            target,
            version if kind == "bpf" else None,
            reason,
            operator,
        )
        return SuspensionEvent(**_fields(row)), version_now


async def suspensions(conn: Conn) -> list[Suspension]:
    """The suspensions in force, the oldest first."""
    rows = await conn.fetch(f"SELECT {_SUSPENSION} FROM controls.suspensions ORDER BY at, seq")
    return [Suspension(**dict(r)) for r in rows]


async def start_stop(conn: Conn, bpf: str, version: int, executor: str) -> Suspension | None:
    """The suspension in force that stops a new run of that BPF version by ``executor``: of the
    version, or of the executor as requester (asked once per start, not per linkage: the
    linkages read the live index)."""
    row = await conn.fetchrow(
        f"SELECT {_SUSPENSION} FROM controls.suspensions"
        " WHERE (kind = 'bpf' AND target = $1 AND version = $2)"
        " OR (kind = 'org' AND target = $3 AND side IN ('requester', 'both'))"
        " ORDER BY kind LIMIT 1",
        bpf,
        version,
        executor,
    )
    return Suspension(**dict(row)) if row else None


async def suspension_history(
    conn: Conn, kind: SuspensionKind | None = None, target: str | None = None
) -> list[SuspensionEvent]:
    """Every suspension and lift (of one target), the oldest first."""
    rows = await conn.fetch(
        f"SELECT seq, action, {_SUSPENSION} FROM controls.suspension_events"
        " WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR target = $2)"
        " ORDER BY seq",
        kind,
        target,
    )
    return [SuspensionEvent(**dict(r)) for r in rows]


async def load_controls(conn: Conn) -> ControlsIndex:
    """A fresh index of the PIAs and suspensions in force, tagged with its version."""
    version: int = await conn.fetchval("SELECT version FROM controls.version")
    return ControlsIndex(await pias(conn), await suspensions(conn), version=version)


class LiveControls(Followed):
    """A :class:`ControlsIndex` kept current on the ``renkei_controls`` channel, by the
    :class:`~whitelist.live.Listener` of the :class:`~whitelist.store.LiveWhitelist` it belongs to
    (one listening connection for both).

    Decisions read :attr:`index`, an attribute swap away from the newest events; they never wait
    on the database."""

    channel = CHANNEL
    what = "controls"

    def __init__(self) -> None:
        super().__init__()
        self.index = ControlsIndex()

    @property
    def version(self) -> int:
        return self.index.version

    async def load(self, conn: asyncpg.Connection) -> None:
        fresh = await load_controls(conn)
        if fresh.version >= self.index.version:
            self.index = fresh
            log.info("PIAs and suspensions now at version %s", fresh.version)
