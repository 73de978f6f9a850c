"""The org registry in PostgreSQL: who the participants are, what they hold and serve, and when.

Orgs were package data; they live in ``whitelist.orgs`` (migration 0022), seeded from
``data/catalog/orgs.yaml`` by ``renkei init``. Every change here is one transaction that also
bumps ``whitelist.version`` and notifies ``renkei_whitelist``, the channel the whitelist's
:class:`~whitelist.store.LiveWhitelist` listens on: each running worker reloads its
:class:`LiveOrgs` with its index, and a catalog bound to it (:meth:`LiveWhitelist.bind`) sees the
new org, role or status at the next decision, without a restart and without a database round
trip per decision.

A role held, an info item served and an action carried out (``whitelist.org_acts``, migration
0042, each with its basis) carry their validity; a decision counts the roles held and the actions
carried out on the linkage's date. A merger closes the predecessor's roles, items and actions on
its date and opens them for the successor from that date.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from whitelist import seal
from whitelist.decide import JST, Decision
from whitelist.models import (
    ID_PATTERN,
    Acting,
    Catalog,
    Held,
    Org,
    OrgKind,
    OrgStatus,
)

Conn = asyncpg.Connection | PoolConnectionProxy
CHANNEL = "renkei_whitelist"  # the whitelist's own channel (whitelist.store)

# Who may move an org from one onboarding status to the next (status -> statuses it may go to).
NEXT_STATUS: dict[OrgStatus, tuple[OrgStatus, ...]] = {
    "registered": ("contract-tested", "retired"),
    "contract-tested": ("contract-tested", "certified", "retired"),
    "certified": ("active", "retired"),
    "active": ("suspended", "retired"),
    "suspended": ("active", "retired"),
    "retired": (),
}

# Ids that are no org's (migrations 0048, 0049): the platform's own party id (the hub's chain,
# keys and channel: an org's role under it would be taken for the hub's), and the citizens' code
# space (an org under it would be given each person's portal sign-in code as its code).
RESERVED = {
    "hub": "the platform's own party id",
    "portal": "the citizens' own code space (their portal sign-in codes)",
}


class OrgChangeRefused(ValueError):
    """A change to the org registry that is not allowed, with the reason."""


class NewOrg(BaseModel):
    """An org to add: names, kind, and the roles and items it starts with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # At most 50 characters: its database login, renkei_login_<id>, fits PostgreSQL's 63.
    id: str = Field(pattern=ID_PATTERN, max_length=50)
    ja: str = Field(min_length=1, max_length=200)
    en: str = Field(min_length=1, max_length=200)
    kind: OrgKind
    roles: tuple[Held, ...] = ()
    serves: tuple[Held, ...] = ()
    acting: tuple[Acting, ...] = ()


class ActEnd(BaseModel):
    """The day an org stops carrying out an action (exclusive: it does not on that day)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    on: dt.date


class OrgChange(BaseModel):
    """A change to an org: new names, roles or items held from a date, or ended on one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ja: str | None = Field(default=None, min_length=1, max_length=200)
    en: str | None = Field(default=None, min_length=1, max_length=200)
    add_roles: tuple[Held, ...] = ()
    end_roles: dict[str, dt.date] = Field(default_factory=dict)
    add_serves: tuple[Held, ...] = ()
    end_serves: dict[str, dt.date] = Field(default_factory=dict)


class OrgEvent(BaseModel):
    org: str
    action: str
    actor: str
    actor_role: str
    at: dt.datetime
    detail: dict[str, Any]


class LiveOrgs(Mapping[str, Org]):
    """The orgs by id, swapped whole when the registry changes (a read never waits).

    Until the registry holds any org (a database not yet initialised), the ``fallback`` orgs
    (the shipped catalog's) stand in.
    """

    def __init__(self, fallback: Mapping[str, Org] | None = None) -> None:
        self._fallback: Mapping[str, Org] = dict(fallback or {})
        # The registry's orgs, each with the actions it carries out (whitelist.org_acts).
        self._registry: Mapping[str, Org] = {}

    def replace(self, orgs: Mapping[str, Org]) -> None:
        self._registry = dict(orgs)

    def with_fallback(self, fallback: Mapping[str, Org]) -> LiveOrgs:
        if not self._fallback:
            self._fallback = dict(fallback)
        return self

    @property
    def _current(self) -> Mapping[str, Org]:
        return self._registry or self._fallback

    def __getitem__(self, key: str) -> Org:
        return self._current[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def get(self, key: str, default: Any = None) -> Any:
        return self._current.get(key, default)


def _today() -> dt.date:
    return dt.datetime.now(JST).date()


def _held(rows: Sequence[asyncpg.Record], column: str) -> tuple[Held, ...]:
    return tuple(
        Held(id=r[column], valid_from=r["valid_from"], valid_to=r["valid_to"]) for r in rows
    )


def _acting(rows: Sequence[asyncpg.Record]) -> tuple[Acting, ...]:
    return tuple(
        Acting(id=r["action"], basis=r["basis"], valid_from=r["valid_from"], valid_to=r["valid_to"])
        for r in rows
    )


async def load_orgs(conn: asyncpg.Pool | Conn, today: dt.date | None = None) -> dict[str, Org]:
    """Every org of the registry with its periods; ``roles``/``serves`` are those of ``today``."""
    day = today or _today()
    try:
        orgs = await conn.fetch("SELECT * FROM whitelist.orgs ORDER BY id")
    except asyncpg.UndefinedTableError:  # a schema from before the registry
        return {}
    roles: dict[str, list[asyncpg.Record]] = {}
    serves: dict[str, list[asyncpg.Record]] = {}
    for r in await conn.fetch("SELECT * FROM whitelist.org_roles ORDER BY org, role, id"):
        roles.setdefault(r["org"], []).append(r)
    for r in await conn.fetch("SELECT * FROM whitelist.org_serves ORDER BY org, info, id"):
        serves.setdefault(r["org"], []).append(r)
    acts: dict[str, list[asyncpg.Record]] = {}
    for r in await conn.fetch("SELECT * FROM whitelist.org_acts ORDER BY org, action, id"):
        acts.setdefault(r["org"], []).append(r)
    out: dict[str, Org] = {}
    for o in orgs:
        held = _held(roles.get(o["id"], []), "role")
        serving = _held(serves.get(o["id"], []), "info")
        acting = _acting(acts.get(o["id"], []))
        out[o["id"]] = Org(
            id=o["id"],
            ja=o["ja"],
            en=o["en"],
            acts=tuple(sorted({a.id for a in acting if a.valid_at(day)})),
            acting=acting,
            kind=o["kind"],
            status=o["status"],
            roles=tuple(sorted({h.id for h in held if h.valid_at(day)})),
            serves=tuple(sorted({h.id for h in serving if h.valid_at(day)})),
            held=held,
            serving=serving,
            successor=o["successor"],
            merged_on=o["merged_on"],
        )
    return out


async def _bump(conn: Conn, hub: Ed25519PrivateKey) -> int:
    await seal.close(conn, hub)  # the registry as this change leaves it, sealed
    version: int = await conn.fetchval(
        "UPDATE whitelist.version SET version = version + 1, changed_at = now() RETURNING version"
    )
    await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", str(version))
    return version


async def _event(
    conn: Conn, org: str, action: str, actor: str, actor_role: str, **detail: object
) -> None:
    await conn.execute(
        "INSERT INTO whitelist.org_events (org, action, actor, actor_role, detail)"
        " VALUES ($1, $2, $3, $4, $5)",
        org,
        action,
        actor,
        actor_role,
        json.loads(json.dumps(detail, default=str)),
    )


def _check_ids(
    catalog: Catalog,
    kind: str,
    roles: Sequence[Held],
    serves: Sequence[Held],
    acting: Sequence[Acting] = (),
) -> None:
    problems = [f"unknown role {h.id!r}" for h in roles if h.id not in catalog.roles]
    problems += [f"unknown action {a.id!r}" for a in acting if a.id not in catalog.actions]
    problems += [f"unknown info item {h.id!r}" for h in serves if h.id not in catalog.info_items]
    if kind == "private" and serves:
        problems.append(
            "a private org serves no info item: it takes part only as a partner that acts (its"
            " roles name it in partner rows), never asking nor answering for data"
        )
    problems += [
        f"{h.id}: valid_to {h.valid_to} is not after valid_from {h.valid_from}"
        for h in (*roles, *serves, *acting)
        if h.valid_from and h.valid_to and h.valid_to <= h.valid_from
    ]
    if problems:
        raise OrgChangeRefused("; ".join(problems))


async def _insert_held(conn: Conn, org: str, roles: Sequence[Held], serves: Sequence[Held]) -> None:
    await conn.executemany(
        "INSERT INTO whitelist.org_roles (org, role, valid_from, valid_to) VALUES ($1, $2, $3, $4)",
        [(org, h.id, h.valid_from, h.valid_to) for h in roles],
    )
    await conn.executemany(
        "INSERT INTO whitelist.org_serves (org, info, valid_from, valid_to) VALUES ($1, $2, $3, $4)",
        [(org, h.id, h.valid_from, h.valid_to) for h in serves],
    )


async def _insert_acting(conn: Conn, org: str, acting: Sequence[Acting]) -> None:
    await conn.executemany(
        "INSERT INTO whitelist.org_acts (org, action, basis, valid_from, valid_to)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(org, a.id, a.basis, a.valid_from, a.valid_to) for a in acting],
    )


async def _status(conn: Conn, org: str) -> OrgStatus:
    status: OrgStatus | None = await conn.fetchval(
        "SELECT status FROM whitelist.orgs WHERE id = $1 FOR UPDATE", org
    )
    if status is None:
        raise OrgChangeRefused(f"unknown org {org!r}")
    return status


async def add(
    pool: asyncpg.Pool,
    catalog: Catalog,
    new: NewOrg,
    actor: str,
    actor_role: str,
    status: OrgStatus = "registered",
    *,
    hub: Ed25519PrivateKey,
) -> int:
    """Register an org (status ``registered``); return the new whitelist version.

    In the same transaction the org gets its own database role, ``renkei_org_<org>``, with the
    grants the sample orgs' roles have (migration 0041): its worker works as that role, or on a
    login of its own (``renkei agencies db-login``)."""
    if new.id in RESERVED:
        raise OrgChangeRefused(f"{new.id!r} is {RESERVED[new.id]}, no org's")
    _check_ids(catalog, new.kind, new.roles, new.serves, new.acting)
    async with pool.acquire() as conn, conn.transaction():
        await seal.begin(conn, hub)
        inserted = await conn.fetchval(
            "INSERT INTO whitelist.orgs (id, ja, en, kind, status) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            new.id,
            new.ja,
            new.en,
            new.kind,
            status,
        )
        if inserted is None:
            raise OrgChangeRefused(f"org {new.id!r} is already registered")
        await _insert_held(conn, new.id, new.roles, new.serves)
        await _insert_acting(conn, new.id, new.acting)
        await conn.fetchval("SELECT trust.make_party_role($1)", new.id)
        await _event(
            conn,
            new.id,
            "add",
            actor,
            actor_role,
            kind=new.kind,
            roles=[h.model_dump(mode="json") for h in new.roles],
            serves=[h.model_dump(mode="json") for h in new.serves],
            acting=[a.model_dump(mode="json") for a in new.acting],
        )
        return await _bump(conn, hub)


async def _close(conn: Conn, table: str, column: str, org: str, item: str, on: dt.date) -> int:
    status: str = await conn.execute(
        f"UPDATE whitelist.{table} SET valid_to = $3 WHERE org = $1 AND {column} = $2"
        " AND (valid_to IS NULL OR valid_to > $3) AND (valid_from IS NULL OR valid_from < $3)",
        org,
        item,
        on,
    )
    return int(status.split()[-1])


async def change(
    pool: asyncpg.Pool,
    catalog: Catalog,
    org: str,
    what: OrgChange,
    actor: str,
    actor_role: str,
    *,
    hub: Ed25519PrivateKey,
) -> int:
    """Rename an org, or give it roles / items from a date, or end them on one."""
    async with pool.acquire() as conn, conn.transaction():
        await seal.begin(conn, hub)
        status = await _status(conn, org)
        kind: str = await conn.fetchval("SELECT kind FROM whitelist.orgs WHERE id = $1", org)
        if status == "retired":
            raise OrgChangeRefused(f"org {org!r} is retired and cannot change")
        _check_ids(catalog, kind, what.add_roles, what.add_serves)
        if what.ja or what.en:
            await conn.execute(
                "UPDATE whitelist.orgs SET ja = coalesce($2, ja), en = coalesce($3, en),"
                " changed_at = now() WHERE id = $1",
                org,
                what.ja,
                what.en,
            )
        await _insert_held(conn, org, what.add_roles, what.add_serves)
        for table, column, ends in (
            ("org_roles", "role", what.end_roles),
            ("org_serves", "info", what.end_serves),
        ):
            for item, on in ends.items():
                if not await _close(conn, table, column, org, item, on):
                    raise OrgChangeRefused(
                        f"{org} holds no {column} {item!r} open on {on.isoformat()}"
                    )
        await _event(conn, org, "change", actor, actor_role, **what.model_dump(mode="json"))
        return await _bump(conn, hub)


async def merge(
    pool: asyncpg.Pool,
    predecessor: str,
    successor: str,
    on: dt.date,
    actor: str,
    actor_role: str,
    *,
    hub: Ed25519PrivateKey,
) -> int:
    """Merge ``predecessor`` into ``successor`` on ``on`` (市町村合併): the predecessor's roles and
    items end on that date and the successor holds them from it; the predecessor is refused from
    that date on, as merged."""
    if predecessor == successor:
        raise OrgChangeRefused("an org cannot merge into itself")
    async with pool.acquire() as conn, conn.transaction():
        await seal.begin(conn, hub)
        for org in (predecessor, successor):
            if await _status(conn, org) == "retired":
                raise OrgChangeRefused(f"org {org!r} is retired")
        done = await conn.fetchval(
            "SELECT successor FROM whitelist.orgs WHERE id = $1", predecessor
        )
        if done is not None:
            raise OrgChangeRefused(f"org {predecessor!r} already merged into {done!r}")
        moved: dict[str, list[str]] = {}
        for table, column in (("org_roles", "role"), ("org_serves", "info")):
            items = [
                r[column]
                for r in await conn.fetch(
                    f"SELECT DISTINCT {column} FROM whitelist.{table} WHERE org = $1"
                    " AND (valid_to IS NULL OR valid_to > $2)",
                    predecessor,
                    on,
                )
            ]
            for item in items:
                await _close(conn, table, column, predecessor, item, on)
                already = await conn.fetchval(
                    f"SELECT 1 FROM whitelist.{table} WHERE org = $1 AND {column} = $2"
                    " AND (valid_from IS NULL OR valid_from <= $3)"
                    " AND (valid_to IS NULL)",
                    successor,
                    item,
                    on,
                )
                if not already:
                    await conn.execute(
                        f"INSERT INTO whitelist.{table} (org, {column}, valid_from)"
                        " VALUES ($1, $2, $3)",
                        successor,
                        item,
                        on,
                    )
            moved[column] = items
        moved["action"] = await _move_acts(conn, predecessor, successor, on)
        await conn.execute(
            "UPDATE whitelist.orgs SET successor = $2, merged_on = $3, changed_at = now()"
            " WHERE id = $1",
            predecessor,
            successor,
            on,
        )
        await _event(
            conn, predecessor, "merge", actor, actor_role, into=successor, on=on, moved=moved
        )
        await _event(conn, successor, "succeed", actor, actor_role, predecessor=predecessor, on=on)
        return await _bump(conn, hub)


async def _move_acts(conn: Conn, predecessor: str, successor: str, on: dt.date) -> list[str]:
    """A merger's actions: the predecessor's open on ``on`` end then, and the successor carries
    them out from then on the same basis (unless it already does)."""
    moving = await conn.fetch(
        "SELECT DISTINCT ON (action) action, basis FROM whitelist.org_acts WHERE org = $1"
        " AND (valid_to IS NULL OR valid_to > $2) ORDER BY action, id DESC",
        predecessor,
        on,
    )
    for r in moving:
        await _close(conn, "org_acts", "action", predecessor, r["action"], on)
        if not await conn.fetchval(
            "SELECT 1 FROM whitelist.org_acts WHERE org = $1 AND action = $2"
            " AND (valid_from IS NULL OR valid_from <= $3) AND valid_to IS NULL",
            successor,
            r["action"],
            on,
        ):
            await _insert_acting(
                conn, successor, [Acting(id=r["action"], basis=r["basis"], valid_from=on)]
            )
    return [r["action"] for r in moving]


async def add_act(
    pool: asyncpg.Pool,
    catalog: Catalog,
    org: str,
    act: Acting,
    actor: str,
    actor_role: str,
    *,
    hub: Ed25519PrivateKey,
) -> int:
    """``org`` carries out action ``act.id`` on ``act.basis`` over ``act``'s period; return the
    new whitelist version (the running workers take it at once)."""
    async with pool.acquire() as conn, conn.transaction():
        await seal.begin(conn, hub)
        status = await _status(conn, org)
        if status == "retired":
            raise OrgChangeRefused(f"org {org!r} is retired and cannot change")
        kind: str = await conn.fetchval("SELECT kind FROM whitelist.orgs WHERE id = $1", org)
        _check_ids(catalog, kind, (), (), (act,))
        overlap = await conn.fetchval(
            "SELECT 1 FROM whitelist.org_acts WHERE org = $1 AND action = $2"
            " AND (valid_to IS NULL OR $3::date IS NULL OR valid_to > $3)"
            " AND (valid_from IS NULL OR $4::date IS NULL OR valid_from < $4)",
            org,
            act.id,
            act.valid_from,
            act.valid_to,
        )
        if overlap:
            raise OrgChangeRefused(
                f"{org} already carries out {act.id!r} over part of that period"
                f" (end it first: renkei orgs end-act {org} {act.id} --on DAY)"
            )
        await _insert_acting(conn, org, [act])
        await _event(conn, org, "add-act", actor, actor_role, **act.model_dump(mode="json"))
        return await _bump(conn, hub)


async def end_act(
    pool: asyncpg.Pool,
    org: str,
    action: str,
    on: dt.date,
    actor: str,
    actor_role: str,
    *,
    hub: Ed25519PrivateKey,
) -> int:
    """``org`` stops carrying out ``action`` on ``on`` (it does not on that day); the period
    is closed, never deleted. Return the new whitelist version."""
    async with pool.acquire() as conn, conn.transaction():
        await seal.begin(conn, hub)
        if await _status(conn, org) == "retired":
            raise OrgChangeRefused(f"org {org!r} is retired and cannot change")
        if not await _close(conn, "org_acts", "action", org, action, on):
            raise OrgChangeRefused(f"{org} carries out no action {action!r} open on {on}")
        await _event(conn, org, "end-act", actor, actor_role, act=action, on=on)
        return await _bump(conn, hub)


async def set_status(
    conn: Conn,
    org: str,
    to: OrgStatus,
    actor: str,
    actor_role: str,
    *,
    hub: Ed25519PrivateKey,
    **detail: object,
) -> int:
    """Move an org to onboarding status ``to`` (in the caller's transaction), or refuse."""
    await seal.begin(conn, hub)
    status = await _status(conn, org)
    if to not in NEXT_STATUS[status]:
        raise OrgChangeRefused(
            f"org {org!r} is {status}: it cannot become {to}"
            + (f" (next: {', '.join(NEXT_STATUS[status])})" if NEXT_STATUS[status] else "")
        )
    await conn.execute(
        "UPDATE whitelist.orgs SET status = $2, changed_at = now() WHERE id = $1", org, to
    )
    await _event(conn, org, to, actor, actor_role, was=status, **detail)
    return await _bump(conn, hub)


async def transition(
    pool: asyncpg.Pool,
    org: str,
    to: OrgStatus,
    actor: str,
    actor_role: str,
    *,
    hub: Ed25519PrivateKey,
    **detail: object,
) -> int:
    """:func:`set_status` in a transaction of its own."""
    async with pool.acquire() as conn, conn.transaction():
        return await set_status(conn, org, to, actor, actor_role, hub=hub, **detail)


async def events(pool: asyncpg.Pool, org: str) -> list[OrgEvent]:
    return [
        OrgEvent(**dict(r))
        for r in await pool.fetch(
            "SELECT org, action, actor, actor_role, at, detail FROM whitelist.org_events"
            " WHERE org = $1 ORDER BY id",
            org,
        )
    ]


async def seed(
    pool: asyncpg.Pool, orgs: Mapping[str, Org], actor: str, *, hub: Ed25519PrivateKey
) -> list[str]:
    """Register the shipped orgs the registry does not hold yet; return their ids.

    They start ``registered``, like any org: onboarding makes them active (``renkei init``
    runs it for the samples, see :mod:`renkei.app.onboarding`).
    """
    added: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await seal.begin(conn, hub)
        have = {r["id"] for r in await conn.fetch("SELECT id FROM whitelist.orgs")}
        # The shipped actions of orgs already there (a registry from before org_acts): each
        # once, never again after a platform operator ended or changed it.
        known = {
            (r["org"], r["action"])
            for r in await conn.fetch("SELECT org, action FROM whitelist.org_acts")
        }
        acts_seeded = False
        for org in orgs.values():
            new_acts = [a for a in org.acting if (org.id, a.id) not in known]
            if org.id in have and new_acts:
                await _insert_acting(conn, org.id, new_acts)
                await _event(conn, org.id, "add-act", actor, "platform-operator", seeded=True)
                acts_seeded = True
            if org.id in have:
                continue
            await conn.execute(
                "INSERT INTO whitelist.orgs (id, ja, en, kind) VALUES ($1, $2, $3, $4)",
                org.id,
                org.ja,
                org.en,
                org.kind,
            )
            await _insert_held(
                conn,
                org.id,
                [Held(id=r) for r in org.roles],
                [Held(id=i) for i in org.serves],
            )
            await _insert_acting(conn, org.id, org.acting)
            await _event(conn, org.id, "add", actor, "platform-operator", seeded=True)
            added.append(org.id)
        if added or acts_seeded:
            await _bump(conn, hub)
    return added


def standing_refusal(
    catalog: Catalog, requester: str, provider: str, at: dt.datetime
) -> Decision | None:
    """The refusal when the requester or the provider may not take part in a linkage now:
    only an active org asks or answers, and an org merged into another stops on the merger's
    date (its successor answers for its roles from then). ``None`` when both may.

    An unknown org is left to the whitelist decision, which names it."""
    day = at.astimezone(JST).date()
    for side, org in (("requester", requester), ("provider", provider)):
        found = catalog.orgs.get(org)
        if found is None:
            continue
        if found.successor is not None and found.merged_on is not None and found.merged_on <= day:
            return Decision(
                allowed=False,
                reason=f"{side} org {org!r} merged into {found.successor!r} on"
                f" {found.merged_on.isoformat()}",
            )
        if found.status != "active":
            return Decision(
                allowed=False,
                reason=f"{side} org {org!r} is {found.status}, not active: only an active org"
                " asks or answers",
            )
    return None
