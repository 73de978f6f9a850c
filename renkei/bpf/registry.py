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
import logging
from collections.abc import Callable, Collection
from typing import Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cachetools import LRUCache
from pydantic import BaseModel, ValidationError

from renkei.bpf.loader import BpfFileError, LoadedBpf, parse_text, stored_hash
from renkei.bpf.loader import content_hash as loaded_hash
from renkei.bpf.models import BpfDefinition, CallStep, walk
from renkei.bpf.validation import KnownBpfs, validate
from whitelist import store
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.models import Catalog, role_of

Conn = asyncpg.Connection | PoolConnectionProxy
# (bpf, version, content hash, report hash) -> (signer, its signing key id, signature)
ApprovalSigner = Callable[[str, int, str, str], tuple[str, str, str]]
# (bpf, version, content hash, executor) -> (the executor's signing key id, its signature)
OperationSigner = Callable[[str, int, str, str], tuple[str, str]]
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


log = logging.getLogger(__name__)

# The states a version may start in, by mode.
RUNNABLE: dict[Mode, list[str]] = {
    "operation": ["operating"],
    "test": ["draft", "conformance-passed", "approved", "operating"],
}


class RegistryConflict(ValueError):
    """Different content under an already registered (bpf, version)."""


class DefinitionAltered(RegistryConflict):
    """A registered version whose stored definition no longer has the content hash it was
    registered under: changed in the database since (by hand, or by someone who could write
    the registry's table). Nothing runs on it; registering the content anew, under a new
    version, is the way on."""


class TransitionRefused(PermissionError):
    """A lifecycle transition the actor may not make, or not from this state."""


class OwnershipRefused(RegistryConflict):
    """A version naming another definer (or other co-definers) than the BPF's recorded ones."""


class Ownership(BaseModel):
    """Who defines a BPF: fixed when its first version is registered, changed only by a
    recorded transfer."""

    bpf: str
    definer: str
    co_definers: list[str] = []

    @property
    def definers(self) -> list[str]:
        return [self.definer, *self.co_definers]

    def describe(self) -> str:
        co = f" with {', '.join(self.co_definers)}" if self.co_definers else ""
        return f"{self.definer}{co}"


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
    operator: str | None = None
    pending: list[str] = []  # definers whose own submission (or retirement) is still awaited


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
        await _keep_owners(conn, loaded)
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
        # Every reader checks the stored definition against its hash (``pinned``): what the
        # database would give back otherwise than it was given (a -0.0 it keeps as 0) is
        # refused now, by its author, rather than at every start.
        stored = await conn.fetchval(
            "SELECT definition FROM registry.bpf_versions WHERE bpf = $1 AND version = $2",
            d.bpf,
            d.version,
        )
        if _checked(stored, loaded.content_hash) is None:
            raise RegistryConflict(
                f"{loaded.source_name}: {d.bpf} version {d.version} does not come back from the"
                " database as it was given (a number it writes otherwise, such as -0.0), so no"
                " process could check it against its hash; write the number plainly (0)"
            )
    return True


async def _keep_owners(conn: Conn, loaded: LoadedBpf) -> None:
    """Record a new BPF's definers, or refuse a version naming others than the recorded ones."""
    d = loaded.definition
    named = Ownership(bpf=d.bpf, definer=d.owners.definer, co_definers=d.owners.co_definers)
    kept = await ownership(conn, d.bpf, lock=True)
    if kept is None:
        await conn.execute(
            "INSERT INTO registry.owners (bpf, definer, co_definers) VALUES ($1, $2, $3)",
            d.bpf,
            named.definer,
            named.co_definers,
        )
    elif (kept.definer, sorted(kept.co_definers)) != (named.definer, sorted(named.co_definers)):
        raise OwnershipRefused(
            f"{loaded.source_name}: {d.bpf} is defined by {kept.describe()}, and version"
            f" {d.version} names {named.describe()}: a BPF's definer is kept across versions;"
            f" only a recorded transfer (renkei bpf transfer {d.bpf} --to ORG) changes it"
        )


async def ownership(pool: asyncpg.Pool | Conn, bpf: str, lock: bool = False) -> Ownership | None:
    """The recorded definers of ``bpf``; ``None`` for a BPF never registered."""
    row = await pool.fetchrow(
        "SELECT bpf, definer, co_definers FROM registry.owners WHERE bpf = $1"
        + (" FOR UPDATE" if lock else ""),
        bpf,
    )
    return Ownership(**{**dict(row), "co_definers": list(row["co_definers"])}) if row else None


class Transfer(BaseModel):
    bpf: str
    from_definer: str
    to_definer: str
    operator: str
    actor: str
    actor_role: str
    reason: str
    at: dt.datetime


async def transfer(
    pool: asyncpg.Pool,
    bpf: str,
    to: str,
    *,
    actor: str,
    operator: str,
    reason: str,
    co_definers: list[str] | None = None,
) -> Transfer:
    """Hand ``bpf`` over to definer ``to`` (and ``co_definers``, kept if not given), as its
    current definer ``actor``; recorded with the operator and the reason."""
    if not reason.strip():
        raise TransitionRefused("a transfer needs a reason (--reason)")
    async with pool.acquire() as conn, conn.transaction():
        kept = await ownership(conn, bpf, lock=True)
        if kept is None:
            raise TransitionRefused(f"{bpf} is not registered")
        if actor != kept.definer:
            raise TransitionRefused(
                f"only {bpf}'s definer ({kept.definer}) transfers it; {actor} is not"
            )
        co = kept.co_definers if co_definers is None else co_definers
        if to in co:
            raise TransitionRefused(f"{to} cannot be both the definer and a co-definer")
        await conn.execute(
            "UPDATE registry.owners SET definer = $2, co_definers = $3, changed_at = now()"
            " WHERE bpf = $1",
            bpf,
            to,
            co,
        )
        at = await conn.fetchval(
            "INSERT INTO registry.ownership_transfers (bpf, from_definer, to_definer, operator,"
            " actor, actor_role, reason) VALUES ($1, $2, $3, $4, $5, 'definer', $6) RETURNING at",
            bpf,
            kept.definer,
            to,
            operator,
            actor,
            reason,
        )
    return Transfer(
        bpf=bpf,
        from_definer=kept.definer,
        to_definer=to,
        operator=operator,
        actor=actor,
        actor_role="definer",
        reason=reason,
        at=at,
    )


async def transfers(pool: asyncpg.Pool, bpf: str) -> list[Transfer]:
    return [
        Transfer(**dict(r))
        for r in await pool.fetch(
            "SELECT bpf, from_definer, to_definer, operator, actor, actor_role, reason, at"
            " FROM registry.ownership_transfers WHERE bpf = $1 ORDER BY id",
            bpf,
        )
    ]


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
        "SELECT version, content_hash, state FROM registry.bpf_versions v"
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
    definition = await pinned(pool, bpf, row["version"], row["content_hash"])
    if definition is None:  # pragma: no cover - removed between the two reads
        return None
    return RegisteredBpf(definition, row["content_hash"], row["state"])


# Definitions read and checked, by (bpf, version, content hash): a start reads only a version's
# state and hash (its state may change at any moment), and the definition once per process (a
# version's content never changes under its hash: the hash is of the content, and a version is
# registered once). Bounded: the least recently used goes first.
_PARSED: LRUCache[tuple[str, int, str], BpfDefinition] = LRUCache(256)


async def pinned(
    pool: asyncpg.Pool | Conn, bpf: str, version: int, content_hash: str
) -> BpfDefinition | None:
    """The registered definition of ``bpf`` ``version`` with exactly that content (``None``:
    none is registered so), read from the database once per process and checked against its
    hash as it is read (:class:`DefinitionAltered`: changed since it was registered)."""
    key = (bpf, version, content_hash)
    definition = _PARSED.get(key)
    if definition is None:
        stored = await pool.fetchval(
            "SELECT definition FROM registry.bpf_versions"
            " WHERE bpf = $1 AND version = $2 AND content_hash = $3",
            *key,
        )
        if stored is None:
            return None
        definition = _checked(stored, content_hash)
        if definition is None:
            log.warning(
                "registered definition altered: %s v%d does not have its content hash %s",
                bpf,
                version,
                content_hash,
            )
            raise DefinitionAltered(
                f"{bpf} v{version}: the registered definition no longer has the content hash it"
                f" was registered under ({content_hash}); it was changed in the database since,"
                " and nothing runs on it"
            )
    _keep(key, definition)
    return definition


def _keep(key: tuple[str, int, str], definition: BpfDefinition) -> None:
    """Keep a definition read and checked, by (bpf, version, content hash): the least recently
    used goes first."""
    _PARSED[key] = definition


def _listed(stored: object, content_hash: str, bpf: str, version: int) -> BpfDefinition | None:
    """A listed version's definition, checked against its hash as :func:`pinned` does (``None``,
    logged: changed in the database since it was registered, and left out of the list)."""
    definition = _checked(stored, content_hash)
    if definition is None:
        log.warning(
            "registered definition altered: %s v%d does not have its content hash %s; not listed",
            bpf,
            version,
            content_hash,
        )
    return definition


def with_source(row: asyncpg.Record, definition: BpfDefinition) -> LoadedBpf:
    """A registered version as validation takes it: ``definition``, its content checked against
    its hash, with its kept source text for line numbers while that text is still the text of
    this content (changed in the database since, the text is set aside: no hash binds it)."""
    stored = LoadedBpf(
        definition=definition,
        source_name=row["source_name"],
        source_text=row["source_text"],
        content_hash=row["content_hash"],
    )
    try:
        loaded = parse_text(row["source_text"], row["source_name"])
    except BpfFileError:  # written in an older shape of the format: no lines, same checks
        return stored
    return loaded if loaded.content_hash == row["content_hash"] else stored


def registered_content(row: asyncpg.Record) -> LoadedBpf | None:
    """A registered version's row (its bpf, version, definition, content hash, source name and
    text) as validation takes it (:func:`with_source`); ``None``, logged, when its definition
    no longer has its content hash."""
    definition = _listed(row["definition"], row["content_hash"], row["bpf"], row["version"])
    return None if definition is None else with_source(row, definition)


def _checked(stored: object, content_hash: str) -> BpfDefinition | None:
    """The definition stored, if it still has ``content_hash`` (``None``: it does not).

    The hash of the stored JSON as it is, first: a model that gained a field since changes
    nothing. Then, only when that differs, the hash of the definition it parses to, as it was
    registered (the database writes some numbers otherwise than they were given: 1e+16 comes
    back as 10000000000000000); what runs is then exactly the content registered."""
    try:
        if stored_hash(stored) == content_hash:
            return BpfDefinition.model_validate(stored)
        parsed = BpfDefinition.model_validate(stored)
    except ValidationError:  # no definition this process reads, whatever its hash
        return None
    return parsed if loaded_hash(parsed) == content_hash else None


async def versions_of(
    pool: asyncpg.Pool | Conn, bpfs: Collection[str]
) -> dict[str, list[BpfDefinition]]:
    """Every registered version of each of ``bpfs``, newest first, each checked against its
    content hash (one changed in the database since it was registered is left out, logged):
    what a page or a message shows of a BPF (its title, what a step waits for) is what was
    registered, never what someone wrote into the table since."""
    found: dict[str, list[BpfDefinition]] = {}
    for r in await pool.fetch(
        "SELECT bpf, version, content_hash, definition FROM registry.bpf_versions"
        " WHERE bpf = ANY($1::text[]) ORDER BY bpf, version DESC",
        sorted(set(bpfs)),
    ):
        definition = _kept(r)
        if definition is not None:
            found.setdefault(r["bpf"], []).append(definition)
    return found


def _kept(row: asyncpg.Record) -> BpfDefinition | None:
    """A row's definition (its bpf, version, content hash and definition), checked against its
    hash at every read, as every listing does (:func:`_listed`; ``None``: changed in the
    database since it was registered). The stored JSON is hashed at every read; a definition
    whose stored JSON still has its hash is parsed once per process (:func:`pinned`'s cache)."""
    key = (row["bpf"], row["version"], row["content_hash"])
    kept = _PARSED.get(key)
    if kept is not None and stored_hash(row["definition"]) == row["content_hash"]:
        return kept
    definition = _listed(row["definition"], row["content_hash"], row["bpf"], row["version"])
    if definition is not None:
        _keep(key, definition)
    return definition


async def runnable(
    pool: asyncpg.Pool, mode: Mode, executor: str | None = None
) -> list[RegisteredBpf]:
    """The version of every BPF that a start without a version would run in ``mode`` (for
    ``executor``: only versions it put into operation, in operation mode)."""
    rows = await pool.fetch(
        "SELECT DISTINCT ON (bpf) bpf, version, definition, content_hash, state"
        " FROM registry.bpf_versions v WHERE state = ANY($1::text[])"
        + _OPERATED_BY.replace("$4", "$2")
        + " ORDER BY bpf, version DESC",
        RUNNABLE[mode],
        executor if mode == "operation" else None,
    )
    found = []
    for r in rows:  # a version changed in the database is not runnable: not listed
        d = _listed(r["definition"], r["content_hash"], r["bpf"], r["version"])
        if d is not None:
            found.append(RegisteredBpf(d, r["content_hash"], r["state"]))
    return found


async def known(pool: asyncpg.Pool | Conn) -> KnownBpfs:
    """Every registered version with its state: what a ``call`` step may name."""
    found = KnownBpfs()
    for r in await pool.fetch(
        "SELECT bpf, version, definition, content_hash, state FROM registry.bpf_versions"
    ):
        d = _listed(r["definition"], r["content_hash"], r["bpf"], r["version"])
        if d is not None:  # a version changed in the database is no version a call may name
            found.add(d, r["state"])
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
    definers: list[str] | None = None,
) -> bool:
    """Whether ``actor`` holds the role that ``action`` needs for definition ``d``
    (``definers``: the BPF's recorded ones, by default those ``d`` names)."""
    role = TRANSITIONS[action][2]
    if role == "definer":
        return actor in (definers or [d.owners.definer, *d.owners.co_definers])
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
    operator: str | None = None,
    approval_signer: ApprovalSigner | None = None,
    operation_signer: OperationSigner | None = None,
) -> Transition:
    """Move one version along its lifecycle, or raise :class:`TransitionRefused` saying why.

    A step towards operation validates the version again (``catalog``, default the shipped one;
    ``whitelist``, default the store's rows) against every registered version. An approval with
    ``approval_signer`` is also kept as the conformance body's signature over the version's
    content hash and the report it approves on (the last passing one the body ran itself for
    this content, else the one submitted). An ``operate`` with ``operation_signer`` is kept with
    the executor's own signature over the version, its content hash and its name: a hub in
    operation runs a version for an executor only so (:mod:`activities.approved`).
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
        # Who may move it (its owners) and what is validated come from its definition: the
        # content registered, or nothing. A version changed in the database since can still be
        # retired by its recorded definers (registry.owners, which its content does not name):
        # out of operation, its BPF's version before it runs again.
        kept = await ownership(conn, bpf)
        d = _checked(row["definition"], row["content_hash"])
        if d is None:
            log.warning(
                "registered definition altered: %s v%d does not have its content hash %s",
                bpf,
                version,
                row["content_hash"],
            )
            if action != "retire" or kept is None:
                raise TransitionRefused(
                    f"{bpf} v{version}: the registered definition no longer has the content hash"
                    " it was registered with (changed in the database): no transition but its"
                    " definers' retirement moves it"
                )
        # Each executor puts an operating version into operation for itself, once.
        another = action == "operate" and row["state"] == "operating"
        if another:
            source = "operating"
        if row["state"] != source:
            raise TransitionRefused(
                f"{bpf} v{version} is {row['state']}: '{action}' moves a version from {source}"
                f" to {target}, and no state can be skipped"
            )
        if d is None:  # retirement by a recorded definer only (above)
            assert kept is not None
            definers = kept.definers
            if actor not in definers:
                raise TransitionRefused(f"'{action}' is for the {role} of {bpf}; {actor} is not")
            recorded_role = role
        else:
            definers = kept.definers if kept else [d.owners.definer, *d.owners.co_definers]
            if not entitled(action, actor, d, conformance_body, actor_roles, definers):
                raise TransitionRefused(f"'{action}' is for the {role} of {bpf}; {actor} is not")
            recorded_role = role
            if role == "executor" and actor in d.owners.entrusted_by:  # 事務委託
                recorded_role = f"executor entrusted by {d.owners.entrusted_by[actor]}"
        word: tuple[str, str] | None = None
        if action == "operate" and operation_signer is not None and d is not None:
            word = operation_signer(bpf, version, row["content_hash"], actor)
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM trust.parties WHERE party = $1"
                " AND signing_id = $2 AND revoked_at IS NULL)",
                actor,
                word[0],
            ):
                raise TransitionRefused(
                    f"{actor} signs with key {word[0]}, which the key registry does not hold as"
                    f" its current key: the hub would take no run on this operate"
                    f" (`renkei keys register`)"
                )
        if another:
            kept_word = await conn.fetchrow(
                "SELECT signing_id, signature FROM registry.operated_by"
                " WHERE bpf = $1 AND version = $2 AND executor = $3",
                bpf,
                version,
                actor,
            )
            # Once, with its own signature: a row without it (from before operations were
            # signed, or added by someone else) or with another (a key since replaced) is signed
            # again by the executor's operate. Ed25519 signs the same words the same way.
            if kept_word is not None and (
                word is None or (kept_word["signing_id"], kept_word["signature"]) == word
            ):
                raise TransitionRefused(f"{bpf} v{version} is already operating for {actor}")
        if action in VALIDATED and d is not None:
            errors = await _revalidate(conn, row, d, action, catalog, whitelist)
            if errors:
                raise TransitionRefused(
                    f"{bpf} v{version} does not pass validation now, so it cannot {action}:\n  "
                    + "\n  ".join(errors)
                )
        if action == "operate" and d is not None:
            for call in (s for s in walk(d.steps) if isinstance(s, CallStep)):
                try:
                    called = await fetch(conn, call.call.bpf, call.call.version, "operation", actor)
                except DefinitionAltered as err:
                    raise TransitionRefused(f"{bpf} v{version} calls {err}") from None
                if called is None:
                    raise TransitionRefused(
                        f"{bpf} v{version} calls {call.call.bpf}, which {actor} has not put"
                        " into operation: it operates what it calls first"
                    )
            await conn.execute(
                "INSERT INTO registry.operated_by (bpf, version, executor, signing_id, signature)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (bpf, version, executor) DO UPDATE"
                " SET signing_id = excluded.signing_id, signature = excluded.signature",
                bpf,
                version,
                actor,
                *(word or (None, None)),
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
        if role == "definer" and len(definers) > 1:  # each definer's own word, then the move
            await conn.execute(
                "INSERT INTO registry.co_signatures (bpf, version, action, party, operator)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                bpf,
                version,
                action,
                actor,
                operator or actor,
            )
            signed = {
                r["party"]
                for r in await conn.fetch(
                    "SELECT party FROM registry.co_signatures"
                    " WHERE bpf = $1 AND version = $2 AND action = $3",
                    bpf,
                    version,
                    action,
                )
            }
            if missing := [p for p in definers if p not in signed]:
                return Transition(
                    bpf=bpf,
                    version=version,
                    from_state=source,
                    to_state=source,
                    actor=actor,
                    actor_role=role,
                    at=dt.datetime.now(dt.UTC),
                    note=note,
                    operator=operator,
                    pending=missing,
                )
        if action == "approve" and approval_signer is not None:
            approved_on = await conn.fetchval(
                "SELECT coalesce((SELECT report_hash FROM registry.conformance_reports"
                " WHERE bpf = $1 AND version = $2 AND content_hash = $3 AND passed"
                " AND run_by = $4 ORDER BY id DESC LIMIT 1), $5)",
                bpf,
                version,
                row["content_hash"],
                conformance_body,
                await conn.fetchval(
                    "SELECT conformance_report_hash FROM registry.bpf_versions"
                    " WHERE bpf = $1 AND version = $2",
                    bpf,
                    version,
                ),
            )
            signer, signing_id, signature = approval_signer(
                bpf, version, row["content_hash"], approved_on
            )
            await conn.execute(
                "INSERT INTO registry.approvals (bpf, version, content_hash, report_hash, signer,"
                " signing_id, signature, operator) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                bpf,
                version,
                row["content_hash"],
                approved_on,
                signer,
                signing_id,
                signature,
                operator,
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
            " (bpf, version, from_state, to_state, actor, actor_role, note, operator)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING at",
            bpf,
            version,
            source,
            target,
            actor,
            recorded_role,
            note,
            operator,
        )
    if action == "operate":
        # Reviewed like every operating version after a load: if a loaded source changes the
        # law on a later day, the version stops admitting runs then (renkei.bpf.review).
        from renkei.bpf.review import review_version

        await review_version(pool, catalog or default_catalog(), bpf, version)
    return Transition(
        bpf=bpf,
        version=version,
        from_state=source,
        to_state=target,
        actor=actor,
        actor_role=recorded_role,
        at=at,
        note=note,
        operator=operator,
    )


# The steps towards operation, each taken only by a version that validates at that moment.
VALIDATED: frozenset[Action] = frozenset({"submit", "approve", "operate"})


async def _revalidate(
    conn: Conn,
    row: asyncpg.Record,
    definition: BpfDefinition,
    action: Action,
    catalog: Catalog | None,
    whitelist: WhitelistIndex | None,
) -> list[str]:
    """The errors validation finds in a registered version now (``definition``: its content,
    checked against its hash)."""
    loaded = with_source(row, definition)
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
        "SELECT bpf, version, from_state, to_state, actor, actor_role, at, note, operator"
        " FROM registry.transitions WHERE bpf = $1 AND version = $2 ORDER BY id",
        bpf,
        version,
    )
    return [Transition(**dict(r)) for r in rows]


class Listed(BaseModel):
    """One registered version as ``renkei bpf list`` shows it."""

    bpf: str
    version: int
    state: str
    content_hash: str
    source_name: str
    loaded_at: dt.datetime
    title: str  # as registered; a version changed in the database since says so instead
    task: str


ALTERED = "(changed in the database since it was registered: not its content hash)"


async def listing(pool: asyncpg.Pool) -> list[Listed]:
    """Every registered version, newest first within each BPF, with its title and task as
    registered (checked against its content hash, as every read of a definition is)."""
    out = []
    for r in await pool.fetch(
        "SELECT bpf, version, state, content_hash, source_name, loaded_at, definition"
        " FROM registry.bpf_versions ORDER BY bpf, version DESC"
    ):
        found = _kept(r)
        out.append(
            Listed(
                bpf=r["bpf"],
                version=r["version"],
                state=r["state"],
                content_hash=r["content_hash"],
                source_name=r["source_name"],
                loaded_at=r["loaded_at"],
                title=found.title.en if found else ALTERED,
                task=found.task if found else "?",
            )
        )
    return out
