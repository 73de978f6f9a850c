"""The BPF registry in PostgreSQL: every registered version, its content hash and its state.

A version, once registered, is immutable: registering different content under the same
(bpf, version) is refused, because running flows are pinned to it.

Its lifecycle::

    draft --submit--> conformance-passed --approve--> approved --operate--> operating --retire--> retired
          (definer, with a passing        (the conformance     (an executor)          (definer)
           conformance report)              body)

No state can be skipped; every transition is recorded with who made it, in which role, and when.
Each executor puts a version into operation for itself (``operate``, once per org, the first
taking it from approved to operating; ``registry.operated_by``): in operation mode a version
starts, and gets its schedules, only for the executors that did — one municipality's ``operate``
puts nothing into operation for the others.
Each step towards operation (submit, approve, operate) validates the version again against what
the registry and the whitelist hold at that moment — the flows it calls included, which must be
operating for it to operate — and is refused with the problems found: a version that would fail
on its first run does not reach operation. Only an operating version may be started in operation
mode; drafts run in test mode only. A new version operates beside the old one: runs in flight
finish on the version they started with.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import BaseModel

from renkei.bpf.loader import BpfFileError, LoadedBpf, parse_text
from renkei.bpf.models import BpfDefinition, CallStep, walk
from renkei.bpf.validation import KnownBpfs, validate
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.models import Catalog, role_of

Conn = asyncpg.Connection | PoolConnectionProxy
State = Literal["draft", "conformance-passed", "approved", "operating", "retired"]
Action = Literal["submit", "approve", "operate", "retire"]
Mode = Literal["operation", "test"]

# action -> (from, to, the role entitled to it)
TRANSITIONS: dict[Action, tuple[State, State, str]] = {
    "submit": ("draft", "conformance-passed", "definer"),
    "approve": ("conformance-passed", "approved", "conformance-body"),
    "operate": ("approved", "operating", "executor"),
    "retire": ("operating", "retired", "definer"),
}


# The states a version may start in, by mode.
RUNNABLE: dict[Mode, list[str]] = {
    "operation": ["operating"],
    "test": ["draft", "conformance-passed", "approved", "operating"],
}


class RegistryConflict(ValueError):
    """Different content under an already registered (bpf, version)."""


class TransitionRefused(PermissionError):
    """A lifecycle transition the actor may not make, or not from this state."""


class RegisteredBpf:
    def __init__(
        self, definition: BpfDefinition, content_hash: str, state: State = "draft"
    ) -> None:
        self.definition = definition
        self.content_hash = content_hash
        self.state = state


class Transition(BaseModel):
    bpf: str
    version: int
    from_state: State
    to_state: State
    actor: str
    actor_role: str
    at: dt.datetime
    note: str | None = None


async def register(pool: asyncpg.Pool, loaded: LoadedBpf, author: str | None = None) -> bool:
    """Register a validated definition as a draft; ``True`` if new, ``False`` if already there."""
    d = loaded.definition
    async with pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchval(
            "SELECT content_hash FROM registry.bpf_versions WHERE bpf = $1 AND version = $2",
            d.bpf,
            d.version,
        )
        if existing == loaded.content_hash:
            return False
        if existing is not None:
            raise RegistryConflict(
                f"{loaded.source_name}: {d.bpf} version {d.version} is already registered with"
                f" content {existing}, and this file's content is {loaded.content_hash}: a"
                " changed definition needs a new version number (the registered one is kept)"
            )
        await conn.execute(
            "INSERT INTO registry.bpf_versions"
            " (bpf, version, content_hash, source_name, source_text, definition, author)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            d.bpf,
            d.version,
            loaded.content_hash,
            loaded.source_name,
            loaded.source_text,
            d.model_dump(mode="json", by_alias=True),
            author or d.owners.definer,
        )
    return True


# In operation mode, for one executor: only a version that executor put into operation.
_OPERATED_BY = (
    " AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM registry.operated_by o"
    "  WHERE o.bpf = v.bpf AND o.version = v.version AND o.executor = $4))"
)


async def fetch(
    pool: asyncpg.Pool | Conn,
    bpf: str,
    version: int | None = None,
    mode: Mode = "test",
    executor: str | None = None,
) -> RegisteredBpf | None:
    """One registered version that may run in ``mode``.

    Operation mode: only an operating version (the highest if ``version`` is ``None``), and with
    ``executor``, only one that executor put into operation. Test mode: any version not retired.
    """
    states = RUNNABLE[mode]
    row = await pool.fetchrow(
        "SELECT definition, content_hash, state FROM registry.bpf_versions v"
        " WHERE bpf = $1 AND ($2::int IS NULL OR version = $2) AND state = ANY($3::text[])"
        + _OPERATED_BY
        + " ORDER BY version DESC LIMIT 1",
        bpf,
        version,
        states,
        executor if mode == "operation" else None,
    )
    if row is None:
        return None
    return RegisteredBpf(
        BpfDefinition.model_validate(row["definition"]), row["content_hash"], row["state"]
    )


async def runnable(
    pool: asyncpg.Pool, mode: Mode, executor: str | None = None
) -> list[RegisteredBpf]:
    """The version of every BPF that a start without a version would run in ``mode`` (for
    ``executor``: only versions it put into operation, in operation mode)."""
    rows = await pool.fetch(
        "SELECT DISTINCT ON (bpf) definition, content_hash, state FROM registry.bpf_versions v"
        " WHERE state = ANY($1::text[])"
        + _OPERATED_BY.replace("$4", "$2")
        + " ORDER BY bpf, version DESC",
        RUNNABLE[mode],
        executor if mode == "operation" else None,
    )
    return [
        RegisteredBpf(BpfDefinition.model_validate(r["definition"]), r["content_hash"], r["state"])
        for r in rows
    ]


async def known(pool: asyncpg.Pool | Conn) -> KnownBpfs:
    """Every registered version with its state: what a ``call`` step may name."""
    found = KnownBpfs()
    for r in await pool.fetch("SELECT definition, state FROM registry.bpf_versions"):
        found.add(BpfDefinition.model_validate(r["definition"]), r["state"])
    return found


async def operated_by(pool: asyncpg.Pool | Conn, bpf: str, version: int) -> list[str]:
    """The executors that put this version into operation, in order."""
    rows = await pool.fetch(
        "SELECT executor FROM registry.operated_by WHERE bpf = $1 AND version = $2"
        " ORDER BY since, executor",
        bpf,
        version,
    )
    return [r["executor"] for r in rows]


async def state_of(pool: asyncpg.Pool, bpf: str, version: int) -> State | None:
    state: State | None = await pool.fetchval(
        "SELECT state FROM registry.bpf_versions WHERE bpf = $1 AND version = $2", bpf, version
    )
    return state


def entitled(
    action: Action,
    actor: str,
    d: BpfDefinition,
    conformance_body: str,
    actor_roles: frozenset[str] = frozenset(),
) -> bool:
    """Whether ``actor`` holds the role that ``action`` needs for definition ``d``."""
    role = TRANSITIONS[action][2]
    if role == "definer":
        return actor == d.owners.definer
    if role == "conformance-body":
        return actor == conformance_body
    return actor in d.owners.executors or any(role_of(e) in actor_roles for e in d.owners.executors)


async def transition(
    pool: asyncpg.Pool,
    bpf: str,
    version: int,
    action: Action,
    actor: str,
    *,
    conformance_body: str,
    actor_roles: frozenset[str] = frozenset(),
    note: str | None = None,
    catalog: Catalog | None = None,
    whitelist: WhitelistIndex | None = None,
) -> Transition:
    """Move one version along its lifecycle, or raise :class:`TransitionRefused` saying why.

    A step towards operation validates the version again (``catalog``, default the shipped one;
    ``whitelist``, default the store's rows) against every registered version.
    """
    source, target, role = TRANSITIONS[action]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT definition, content_hash, state, source_name, source_text"
            " FROM registry.bpf_versions WHERE bpf = $1 AND version = $2 FOR UPDATE",
            bpf,
            version,
        )
        if row is None:
            raise TransitionRefused(f"{bpf} version {version} is not registered")
        d = BpfDefinition.model_validate(row["definition"])
        # Each executor puts an operating version into operation for itself, once.
        another = action == "operate" and row["state"] == "operating"
        if another:
            source = "operating"
            if actor in await operated_by(conn, bpf, version):
                raise TransitionRefused(f"{bpf} v{version} is already operating for {actor}")
        if row["state"] != source:
            raise TransitionRefused(
                f"{bpf} v{version} is {row['state']}: '{action}' moves a version from {source}"
                f" to {target}, and no state can be skipped"
            )
        if not entitled(action, actor, d, conformance_body, actor_roles):
            raise TransitionRefused(f"'{action}' is for the {role} of {bpf}; {actor} is not")
        if action in VALIDATED:
            errors = await _revalidate(conn, row, action, catalog, whitelist)
            if errors:
                raise TransitionRefused(
                    f"{bpf} v{version} does not pass validation now, so it cannot {action}:\n  "
                    + "\n  ".join(errors)
                )
        if action == "operate":
            for call in (s for s in walk(d.steps) if isinstance(s, CallStep)):
                if await fetch(conn, call.call.bpf, call.call.version, "operation", actor) is None:
                    raise TransitionRefused(
                        f"{bpf} v{version} calls {call.call.bpf}, which {actor} has not put"
                        " into operation: it operates what it calls first"
                    )
            await conn.execute(
                "INSERT INTO registry.operated_by (bpf, version, executor) VALUES ($1, $2, $3)",
                bpf,
                version,
                actor,
            )
        report_hash = None
        if action == "submit":
            report_hash = await conn.fetchval(
                "SELECT report_hash FROM registry.conformance_reports"
                " WHERE bpf = $1 AND version = $2 AND content_hash = $3 AND passed"
                " ORDER BY id DESC LIMIT 1",
                bpf,
                version,
                row["content_hash"],
            )
            if report_hash is None:
                raise TransitionRefused(
                    f"{bpf} v{version} has no passing conformance report for its content"
                    " (run `renkei conformance` first)"
                )
        await conn.execute(
            "UPDATE registry.bpf_versions SET state = $3,"
            " conformance_report_hash = coalesce($4, conformance_report_hash)"
            " WHERE bpf = $1 AND version = $2",
            bpf,
            version,
            target,
            report_hash,
        )
        at = await conn.fetchval(
            "INSERT INTO registry.transitions"
            " (bpf, version, from_state, to_state, actor, actor_role, note)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING at",
            bpf,
            version,
            source,
            target,
            actor,
            role,
            note,
        )
    return Transition(
        bpf=bpf,
        version=version,
        from_state=source,
        to_state=target,
        actor=actor,
        actor_role=role,
        at=at,
        note=note,
    )


# The steps towards operation, each taken only by a version that validates at that moment.
VALIDATED: frozenset[Action] = frozenset({"submit", "approve", "operate"})


async def _revalidate(
    conn: Conn,
    row: asyncpg.Record,
    action: Action,
    catalog: Catalog | None,
    whitelist: WhitelistIndex | None,
) -> list[str]:
    """The errors validation finds in a registered version now."""
    try:  # its own text, for line numbers; the stored definition is the same content
        loaded = parse_text(row["source_text"], row["source_name"])
    except BpfFileError:  # written in an older shape of the format: no lines, same checks
        loaded = LoadedBpf(
            definition=BpfDefinition.model_validate(row["definition"]),
            source_name=row["source_name"],
            source_text=row["source_text"],
            content_hash=row["content_hash"],
        )
    if whitelist is None:
        whitelist = await store.load_index(conn)
    issues = validate(
        loaded,
        catalog or default_catalog(),
        whitelist,
        known=await known(conn),
        operating=action == "operate",
    )
    return [str(i) for i in issues if i.severity == "error"]


async def history(pool: asyncpg.Pool, bpf: str, version: int) -> list[Transition]:
    rows = await pool.fetch(
        "SELECT bpf, version, from_state, to_state, actor, actor_role, at, note"
        " FROM registry.transitions WHERE bpf = $1 AND version = $2 ORDER BY id",
        bpf,
        version,
    )
    return [Transition(**dict(r)) for r in rows]


async def listing(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every registered version, newest first within each BPF."""
    return await pool.fetch(
        "SELECT bpf, version, state, content_hash, source_name, loaded_at,"
        " definition->'title'->>'en' AS title, definition->>'task' AS task"
        " FROM registry.bpf_versions ORDER BY bpf, version DESC"
    )
