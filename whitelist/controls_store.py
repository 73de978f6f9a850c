"""The PIA registry and the suspensions in PostgreSQL, and the live index workers decide with.

Every change is a row appended to ``controls.pia_events`` or ``controls.suspension_events``
(migrations 0020, 0021: never updated, never deleted), with a ``NOTIFY`` on ``renkei_controls``
in its transaction. :class:`LiveControls` holds a
:class:`~whitelist.controls.ControlsIndex` and swaps in a fresh one on that channel's notice; the
:class:`~whitelist.store.LiveWhitelist` it belongs to listens for both, on one connection
(:mod:`whitelist.live`), so a PIA withdrawn or an org suspended reaches every running worker
without a restart, and no decision waits on the database.

Both tables are appended by the application's role, so any process with that role could append
a PIA in force or lift a suspension. Each event the platform appends therefore carries the hub's
signature over its table, its number and its content (migration 0059), and every reader takes,
for each PIA and each target, the newest event whose signature holds against the hub's key it
pinned: an event appended any other way decides nothing, and one copied under a later number
does not hold. The state the events from before signing left is signed again by the hub at
its start (:func:`carry_over`, for what the hub has signed nothing of); until then they hold
for no one. A target whose
newest :data:`EVENTS_LOOKED_AT` signed events none hold, or whose newest is signed with a key
that is not the one pinned, is taken as suspended (nothing says the hub lifted it); a PIA's, as
no PIA. A version is the sum of both tables' highest event numbers: it grows with each event,
and no one sets it (the unsigned ``controls.version`` row is no longer read or written).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from renkei.kernel import attest, keys
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
    """One change of the PIA registry, with its place in the history and whether it holds (the
    hub signed it; one that does not decides nothing)."""

    seq: int
    holds: bool = True


class SuspensionEvent(Suspension):
    """One suspension or lift, with its place in the history."""

    seq: int
    action: str
    holds: bool = True


# Events looked at per PIA or target for the newest that holds: events whose signatures do not
# hold (anyone with the application's role can append one) cost a reader no more than these.
EVENTS_LOOKED_AT = 64

Events = Literal["pia", "suspension"]
_TABLE: dict[Events, str] = {
    "pia": "controls.pia_events",
    "suspension": "controls.suspension_events",
}
_KEY: dict[Events, str] = {"pia": "org, task", "suspension": "kind, target, version"}
# What the hub signs of each event (with its table and number): every column but the signature's.
_SIGNED: dict[Events, tuple[str, ...]] = {
    "pia": tuple(_PIA.split(", ")),
    "suspension": ("kind", "target", "version", "side", "action", "reason", "operator", "at"),
}
_STAMP: dict[Events, str] = {"pia": "recorded_at", "suspension": "at"}
# What a reader reads of an event: what is signed, its number and its signature.
_READ: dict[Events, str] = {
    e: ", ".join([*c, "seq", "signing_id", "signature"]) for e, c in _SIGNED.items()
}
# One writer at a time (the platform's row lock "controls" in records.platform_locks, taken
# before an event's number: no org's role may read or lock that table, as it could an advisory
# lock), waiting for it no longer than LOCK_WAIT: a change read and made is the one in force
# when it commits.
LOCK_WAIT = "10s"
_LOCK = "SELECT 1 FROM records.platform_locks WHERE name = 'controls' FOR NO KEY UPDATE"


def _message(events: Events, seq: int, fields: Mapping[str, object]) -> bytes:
    return attest.fields_message(
        f"controls/v1|{events}|{seq}", {c: fields[c] for c in _SIGNED[events]}
    )


async def _append(
    conn: Conn, hub: Ed25519PrivateKey, events: Events, fields: dict[str, object]
) -> asyncpg.Record:
    """Append one event with the hub's signature over its table, its number and its content."""
    table = _TABLE[events]
    got = await conn.fetchrow(f"SELECT nextval('{table}_seq_seq') AS seq, now() AS now")
    assert got is not None
    seq: int = got["seq"]
    fields = {_STAMP[events]: got["now"], **fields}  # a stamp given is kept (a carried event)
    signature = attest.sign(hub, _message(events, seq, fields))
    columns = [*fields, "seq", "signing_id", "signature"]
    values = [*fields.values(), seq, keys.key_id(keys.public_raw(hub.public_key())), signature]
    row = await conn.fetchrow(
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})"
        f" RETURNING {_READ[events]}",
        *values,
    )
    assert row is not None
    return row


@functools.lru_cache(maxsize=65536)  # events never change: each is checked once per process
def _verified(hub: bytes, signature: str, message: bytes) -> bool:
    return attest.holds(Ed25519PublicKey.from_public_bytes(hub), signature, message)


def _holds(events: Events, row: asyncpg.Record, hub: Ed25519PublicKey | None) -> bool:
    """Whether ``row`` is the hub's word (signed by it)."""
    if hub is None:
        return True
    if row["signature"] is None:
        return False
    message = _message(events, row["seq"], dict(row))
    return _verified(keys.public_raw(hub), row["signature"], message)


class _Latest(NamedTuple):
    """Each key's newest event that holds; the keys whose newest events none hold."""

    held: list[asyncpg.Record]
    unreadable: list[asyncpg.Record]


async def _latest(
    conn: Conn, events: Events, hub: Ed25519PublicKey | None, where: str = "TRUE", *args: object
) -> _Latest:
    # One round trip (a start asks it). Events with no signature are left in the database:
    # they hold for no one, and cost a reader nothing.
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT {_READ[events]}, row_number() OVER"
        f" (PARTITION BY {_KEY[events]} ORDER BY seq DESC) AS nth FROM {_TABLE[events]}"
        f" WHERE ({where}) AND signature IS NOT NULL) latest"
        f" WHERE nth <= {EVENTS_LOOKED_AT} ORDER BY seq DESC",
        *args,
    )
    pinned = keys.key_id(keys.public_raw(hub)) if hub is not None else None
    held: dict[tuple[object, ...], asyncpg.Record] = {}
    unreadable: dict[tuple[object, ...], asyncpg.Record] = {}
    passed: dict[tuple[object, ...], int] = {}
    newest: dict[tuple[object, ...], asyncpg.Record] = {}
    for row in rows:  # newest first
        key = tuple(row[c] for c in _KEY[events].split(", "))
        newest.setdefault(key, row)
        if key in held or key in unreadable:
            continue
        if _holds(events, row, hub):
            held[key] = row
        elif row["signing_id"] != pinned:
            # signed with a key that is not the one this reader pinned (a stale key file, or
            # someone else's): what the hub said of this key cannot be told, so not taken
            unreadable[key] = newest[key]
        else:
            passed[key] = passed.get(key, 0) + 1
            if passed[key] >= EVENTS_LOOKED_AT:
                unreadable[key] = newest[key]
    if unreadable:
        log.error(
            "%s %s key(s) whose newest signed events do not hold: taken as unreadable",
            len(unreadable),
            events,
        )
    return _Latest(list(held.values()), list(unreadable.values()))


def _pia(row: asyncpg.Record) -> Pia:
    return Pia(**{c: row[c] for c in _SIGNED["pia"]})


def _suspension(row: asyncpg.Record) -> Suspension:
    return Suspension(**{c: row[c] for c in _SUSPENSION.split(", ")})


def _unreadable(row: asyncpg.Record) -> Suspension:
    """What stands for a target whose newest events none hold: suspended (nothing says the hub
    lifted it), on both sides, from when it was read so (the events' own times are not the
    hub's word)."""
    return Suspension(
        kind=row["kind"],
        target=row["target"],
        version=row["version"],
        side="both" if row["kind"] == "org" else None,
        reason="its newest events are not the hub's (none holds): read as suspended",
        operator="renkei",
        at=dt.datetime.now(dt.UTC),
    )


_MARKS = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM controls.pia_events) AS pia,"
    " (SELECT coalesce(max(seq), 0) FROM controls.suspension_events) AS suspension"
)


async def current_version(conn: Conn) -> int:
    """The version of the PIAs and suspensions as ``conn`` sees them: the sum of both tables'
    highest event numbers (each event raises it; the events are never removed)."""
    marks = await conn.fetchrow(_MARKS)
    assert marks is not None
    return int(marks["pia"] + marks["suspension"])


async def _writing(conn: Conn) -> None:
    """Begin a change (in ``conn``'s transaction): one writer at a time, waiting at most
    :data:`LOCK_WAIT` (then :class:`ControlRefused`)."""
    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
    try:
        if await conn.fetchval(_LOCK) is None:  # the row made once, then locked
            await conn.execute(
                "INSERT INTO records.platform_locks (name) VALUES ('controls')"
                " ON CONFLICT DO NOTHING"
            )
            await conn.fetchval(_LOCK)
    except asyncpg.LockNotAvailableError:
        raise ControlRefused(
            f"another change of the PIAs or suspensions held the lock past {LOCK_WAIT}: nothing"
            " was changed; try again (if it persists, a session holds it: see docs/trust.md)"
        ) from None


async def _changed(conn: Conn) -> int:
    """End a change: the workers are told (at commit) of the version it makes."""
    version = await current_version(conn)
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(version))
    return version


def _pia_fields(pia: Pia, recorded_by: str) -> dict[str, object]:
    return {
        "org": pia.org,
        "task": pia.task,
        "level": pia.level,
        "approved_on": pia.approved_on,
        "review_due": pia.review_due,
        "status": pia.status,
        "note": pia.note,
        "recorded_by": recorded_by,
    }


async def set_pia(
    pool: asyncpg.Pool, pia: Pia, recorded_by: str, *, hub: Ed25519PrivateKey
) -> tuple[Pia, int]:
    """Record ``pia`` as the PIA in force for its (org, task), signed with ``hub``; (as recorded,
    new version)."""
    async with pool.acquire() as conn, conn.transaction():
        await _writing(conn)
        row = await _append(conn, hub, "pia", _pia_fields(pia, recorded_by))
        return _pia(row), await _changed(conn)


async def withdraw_pia(
    pool: asyncpg.Pool,
    org: str,
    task: str,
    reason: str,
    recorded_by: str,
    *,
    hub: Ed25519PrivateKey,
) -> tuple[Pia, int]:
    """Withdraw the PIA of (org, task): a new event, the old ones kept."""
    async with pool.acquire() as conn, conn.transaction():
        await _writing(conn)  # the PIA read is the one withdrawn
        found = await pias(conn, org, task, hub=hub.public_key())
        if not found:
            raise ControlRefused(f"{org} has no PIA recorded for task {task!r}")
        [current] = found
        if current.status == "withdrawn":
            raise ControlRefused(f"{org}'s PIA for task {task!r} is already withdrawn")
        withdrawn = current.model_copy(update={"status": "withdrawn", "note": reason})
        row = await _append(conn, hub, "pia", _pia_fields(withdrawn, recorded_by))
        return _pia(row), await _changed(conn)


async def seed_pias(
    pool: asyncpg.Pool, pias: Sequence[Pia], recorded_by: str, *, hub: Ed25519PrivateKey
) -> int:
    """Record each PIA whose (org, task) has none on record yet that holds (a withdrawal or a
    change made since stays as it is); return how many were recorded."""
    async with pool.acquire() as conn, conn.transaction():
        await _writing(conn)  # no (org, task) is seeded twice
        found = await _latest(conn, "pia", hub.public_key())
        known = {(r["org"], r["task"]) for r in (*found.held, *found.unreadable)}
        fresh = [p for p in pias if (p.org, p.task) not in known]
        if not fresh:
            return 0
        for p in fresh:
            await _append(conn, hub, "pia", _pia_fields(p, recorded_by))
        await _changed(conn)
        return len(fresh)


async def carry_over(pool: asyncpg.Pool, hub: Ed25519PrivateKey) -> int:
    """Sign again, as the hub's, the state the events from before signing left (migration
    0059): each PIA's newest event, and each target's newest when it is a suspension, with its
    content and time. Only events from before (numbered below ``controls.signed_from``, which
    no role but the owner writes), and only for a PIA or target the hub has signed no event of
    (checked against its key: an event someone else marked signed does not count), so nothing
    appended since is ever carried, and nothing the hub said since is undone. Run at the hub's
    start; return how many."""
    public = hub.public_key()
    pinned = keys.key_id(keys.public_raw(public))
    carried = 0
    async with pool.acquire() as conn, conn.transaction():
        await _writing(conn)
        for events in ("pia", "suspension"):
            table, key = _TABLE[events], _KEY[events].split(", ")
            rows = await conn.fetch(
                f"SELECT DISTINCT ON ({_KEY[events]}) {_READ[events]} FROM {table} WHERE seq <"
                f" (SELECT seq FROM controls.signed_from WHERE events = '{events}')"
                f" ORDER BY {_KEY[events]}, seq DESC"
            )
            if not rows:
                continue
            said: set[tuple[object, ...]] = set()  # the keys the hub signed an event of
            for signed in await conn.fetch(
                f"SELECT {_READ[events]} FROM {table} WHERE signing_id = $1", pinned
            ):
                k = tuple(signed[c] for c in key)
                if k not in said and _holds(events, signed, public):
                    said.add(k)
            for row in rows:
                if tuple(row[c] for c in key) in said:
                    continue
                if events == "suspension" and row["action"] != "suspend":
                    continue  # lifted: nothing to carry
                await _append(conn, hub, events, {c: row[c] for c in _SIGNED[events]})
                carried += 1
        if carried:
            await _changed(conn)
    return carried


async def pias(
    conn: Conn, org: str | None = None, task: str | None = None, *, hub: Ed25519PublicKey | None
) -> list[Pia]:
    """The PIAs in force (each (org, task)'s newest event that holds), optionally of one org or
    task. ``hub``: the key whose signatures count (``None``: every event, a tool's look)."""
    found = await _latest(
        conn,
        "pia",
        hub,
        "($1::text IS NULL OR org = $1) AND ($2::text IS NULL OR task = $2)",
        org,
        task,
    )
    return sorted((_pia(r) for r in found.held), key=lambda p: (p.org, p.task))


async def pia_history(
    conn: Conn, org: str, task: str, *, hub: Ed25519PublicKey | None
) -> list[PiaEvent]:
    """Every change of (org, task)'s PIA, the oldest first, each marked whether it holds."""
    rows = await conn.fetch(
        f"SELECT {_READ['pia']} FROM controls.pia_events WHERE org = $1 AND task = $2 ORDER BY seq",
        org,
        task,
    )
    return [
        PiaEvent(**_pia(r).model_dump(), seq=r["seq"], holds=_holds("pia", r, hub)) for r in rows
    ]


async def suspend(
    pool: asyncpg.Pool,
    kind: SuspensionKind,
    target: str,
    reason: str,
    operator: str,
    *,
    hub: Ed25519PrivateKey,
    version: int | None = None,
    side: Side | None = None,
) -> tuple[Suspension, int]:
    """Suspend ``target`` from now (a suspension already in force is replaced: its side, its
    reason), signed with ``hub``; (the suspension, new version)."""
    if kind == "org" and side is None:
        side = "both"
    async with pool.acquire() as conn, conn.transaction():
        await _writing(conn)
        row = await _append(
            conn,
            hub,
            "suspension",
            {
                "kind": kind,
                "target": target,
                "version": version if kind == "bpf" else None,
                "side": side if kind == "org" else None,
                "action": "suspend",
                "reason": reason,
                "operator": operator,
            },
        )
        return _suspension(row), await _changed(conn)


async def lift(
    pool: asyncpg.Pool,
    kind: SuspensionKind,
    target: str,
    reason: str,
    operator: str,
    *,
    hub: Ed25519PrivateKey,
    version: int | None = None,
) -> tuple[SuspensionEvent, int]:
    """Lift the suspension of ``target`` from now; :class:`ControlRefused` if none is in force."""
    v = version if kind == "bpf" else None
    async with pool.acquire() as conn, conn.transaction():
        await _writing(conn)  # the suspension found is still the one in force when lifted
        found = await _latest(
            conn,
            "suspension",
            hub.public_key(),
            "kind = $1 AND target = $2 AND version IS NOT DISTINCT FROM $3",
            kind,
            target,
            v,
        )
        if not found.unreadable and not any(r["action"] == "suspend" for r in found.held):
            what = f"{target} v{version}" if kind == "bpf" else target
            raise ControlRefused(f"no suspension of {kind} {what} is in force")
        fields: dict[str, object] = {
            "kind": kind,
            "target": target,
            "version": v,
            "side": None,
            "action": "lift",
            "reason": reason,
            "operator": operator,
        }
        row = await _append(conn, hub, "suspension", fields)
        lifted = SuspensionEvent(**_suspension(row).model_dump(), seq=row["seq"], action="lift")
        return lifted, await _changed(conn)


def _in_force(found: _Latest) -> list[Suspension]:
    stops = [_suspension(r) for r in found.held if r["action"] == "suspend"]
    return sorted([*stops, *map(_unreadable, found.unreadable)], key=lambda s: s.at)


async def suspensions(conn: Conn, *, hub: Ed25519PublicKey | None) -> list[Suspension]:
    """The suspensions in force (each target's newest event that holds, a suspension), the
    oldest first."""
    return _in_force(await _latest(conn, "suspension", hub))


async def start_stop(
    conn: Conn, bpf: str, version: int, executor: str, *, hub: Ed25519PublicKey
) -> Suspension | None:
    """The suspension in force that stops a new run of that BPF version by ``executor``: of the
    version, or of the executor as requester (asked once per start, not per linkage: the
    linkages read the live index)."""
    found = _in_force(
        await _latest(
            conn,
            "suspension",
            hub,
            "(kind = 'bpf' AND target = $1 AND version = $2) OR (kind = 'org' AND target = $3)",
            bpf,
            version,
            executor,
        )
    )
    stops = [s for s in found if s.kind == "bpf" or s.side in ("requester", "both")]
    return min(stops, key=lambda s: s.kind) if stops else None


async def suspension_history(
    conn: Conn,
    kind: SuspensionKind | None = None,
    target: str | None = None,
    *,
    hub: Ed25519PublicKey | None,
) -> list[SuspensionEvent]:
    """Every suspension and lift (of one target), the oldest first, each marked whether it
    holds."""
    rows = await conn.fetch(
        f"SELECT {_READ['suspension']} FROM controls.suspension_events"
        " WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR target = $2)"
        " ORDER BY seq",
        kind,
        target,
    )
    return [
        SuspensionEvent(
            **_suspension(r).model_dump(),
            seq=r["seq"],
            action=r["action"],
            holds=_holds("suspension", r, hub),
        )
        for r in rows
    ]


async def _read(conn: Conn, hub: Ed25519PublicKey | None) -> tuple[ControlsIndex, tuple[int, int]]:
    """A fresh index and the highest numbers of the PIA and suspension events (any, whether
    they hold or not)."""
    # the events appended so far (appended, never removed: a later read is never lower)
    marks = await conn.fetchrow(_MARKS)
    assert marks is not None
    pia = await _latest(conn, "pia", hub)
    stops = await _latest(conn, "suspension", hub)
    index = ControlsIndex(
        sorted((_pia(r) for r in pia.held), key=lambda p: (p.org, p.task)),
        _in_force(stops),
        version=marks["pia"] + marks["suspension"],
    )
    return index, (marks["pia"], marks["suspension"])


async def load_controls(conn: Conn, *, hub: Ed25519PublicKey | None) -> ControlsIndex:
    """A fresh index of the PIAs and suspensions in force, tagged with its version."""
    return (await _read(conn, hub))[0]


class LiveControls(Followed):
    """A :class:`ControlsIndex` kept current on the ``renkei_controls`` channel, by the
    :class:`~whitelist.live.Listener` of the :class:`~whitelist.store.LiveWhitelist` it belongs to
    (one listening connection for both).

    Decisions read :attr:`index`, an attribute swap away from the newest events; they never wait
    on the database."""

    channel = CHANNEL
    what = "controls"

    def __init__(self, hub: Ed25519PublicKey | None) -> None:
        """``hub``: the hub's public key, whose signatures on the events count (``None`` only
        where nothing is decided with them, a tool's look)."""
        super().__init__()
        self._hub = hub
        self._marks = (0, 0)
        self.index = ControlsIndex()

    @property
    def version(self) -> int:
        return self.index.version

    async def load(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            fresh, marks = await _read(conn, self._hub)
        # Newer is the events' numbers (appended, never removed): not an unsigned version number,
        # which whoever could write it could set far ahead and back, and freeze the workers so.
        if marks[0] >= self._marks[0] and marks[1] >= self._marks[1]:
            self._marks = marks
            self.index = fresh
            log.info("PIAs and suspensions now at version %s", fresh.version)
        else:
            log.error("PIAs and suspensions not reloaded: the events read are older than held")
