"""The whitelist in PostgreSQL, and the live in-memory index workers decide with.

Writers replace a source's rows in one transaction, seal the content they leave with the hub's
key (:mod:`whitelist.seal`), bump ``whitelist.version`` and ``NOTIFY`` the ``renkei_whitelist``
channel. :class:`LiveWhitelist` holds an immutable
:class:`~whitelist.decide.WhitelistIndex`, listens on that channel and swaps in a fresh index when
the version changes, so a worker picks up a new or retired row without a restart. If the listening
connection drops, it reconnects and reloads (a notification may have been missed meanwhile).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Sequence

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from renkei.kernel.db import APP_ROLE
from whitelist.catalog import default_catalog
from whitelist.controls_store import LiveControls
from whitelist.decide import WhitelistIndex
from whitelist.live import Followed, Listener
from whitelist.models import Catalog, Held, Org, PeriodKind, Source, WhitelistRow
from whitelist.orgs import LiveOrgs, load_orgs
from whitelist.seal import TABLES, WhitelistUnsealed, content_digest, registry_content
from whitelist.seal import begin as seal_begin
from whitelist.seal import check as check_seal
from whitelist.seal import close as seal_close
from whitelist.sources import RowDiff, diff_rows

CHANNEL = "renkei_whitelist"
_COLUMNS = (
    "id, source, item, requester_role, task, provider_role, info, legal_text, valid_from,"
    " valid_to, scope, sub_task, sub_info, body"
)
_SOURCE_COLUMNS = (
    "id, title, citation, valid_from, valid_to, stand_in_from, stand_in_note, supersedes,"
    " content_hash, loaded_by, loaded_at, body"
)
log = logging.getLogger(__name__)


def _as_record(r: WhitelistRow) -> tuple[object, ...]:
    return tuple(getattr(r, c.strip()) for c in _COLUMNS.split(","))


async def replace_source(
    pool: asyncpg.Pool, source: str, rows: Sequence[WhitelistRow], *, hub: Ed25519PrivateKey
) -> int:
    """Replace every row of ``source`` with ``rows``; return the new whitelist version."""
    async with pool.acquire() as conn, conn.transaction():
        await seal_begin(conn, hub)
        await conn.execute("DELETE FROM whitelist.rows WHERE source = $1", source)
        await conn.copy_records_to_table(
            "rows",
            schema_name="whitelist",
            columns=[c.strip() for c in _COLUMNS.split(",")],
            records=[_as_record(r) for r in rows if r.source == source],
        )
        await seal_close(conn, hub)
        return await _bump(conn)


async def upsert_rows(
    pool: asyncpg.Pool, rows: Sequence[WhitelistRow], *, hub: Ed25519PrivateKey
) -> int:
    """Insert or update individual rows (e.g. an ordinance amendment); return the new version."""
    async with pool.acquire() as conn, conn.transaction():
        await seal_begin(conn, hub)
        await conn.executemany(
            f"INSERT INTO whitelist.rows ({_COLUMNS})"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
            " ON CONFLICT (id) DO UPDATE SET valid_from = EXCLUDED.valid_from,"
            " valid_to = EXCLUDED.valid_to, legal_text = EXCLUDED.legal_text, scope = EXCLUDED.scope,"
            " loaded_at = now()",
            [_as_record(r) for r in rows],
        )
        await seal_close(conn, hub)
        return await _bump(conn)


async def delete_rows(pool: asyncpg.Pool, ids: Sequence[str], *, hub: Ed25519PrivateKey) -> int:
    """Delete rows by id; return the new version."""
    async with pool.acquire() as conn, conn.transaction():
        await seal_begin(conn, hub)
        await conn.execute("DELETE FROM whitelist.rows WHERE id = ANY($1::text[])", list(ids))
        await seal_close(conn, hub)
        return await _bump(conn)


async def seal_if_unsealed(pool: asyncpg.Pool, hub: Ed25519PrivateKey) -> bool:
    """Seal the content as it is if no seal was ever appended (an install upgraded from before
    seals: the content it had is taken as loaded); ``True`` if it did."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"LOCK TABLE {', '.join(f'whitelist.{t}' for t in TABLES)} IN EXCLUSIVE MODE"
        )
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM whitelist.seals)"):
            return False
        await seal_close(conn, hub)
        await _bump(conn)
        return True


async def _bump(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> int:
    version: int = await conn.fetchval(
        "UPDATE whitelist.version SET version = version + 1, changed_at = now() RETURNING version"
    )
    await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", str(version))
    return version


async def fetch_rows(
    pool: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    where: str = "",
    *args: object,
) -> list[WhitelistRow]:
    """Rows in the store, optionally filtered by a SQL condition over the row columns."""
    sql = f"SELECT {_COLUMNS} FROM whitelist.rows {('WHERE ' + where) if where else ''} ORDER BY id"
    return [WhitelistRow(**dict(r)) for r in await pool.fetch(sql, *args)]


async def fetch_sources(
    pool: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
) -> list[Source]:
    """Every source in the store, oldest validity first."""
    rows = await pool.fetch(
        f"SELECT {_SOURCE_COLUMNS} FROM whitelist.sources ORDER BY valid_from, id"
    )
    return [Source(**dict(r)) for r in rows]


async def load_index(
    pool: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    *,
    sealed_by: Ed25519PublicKey | None = None,
) -> WhitelistIndex:
    """A fresh index of every row and source, tagged with the version it was read at, all read
    at one moment. ``sealed_by`` (the hub's public key): only if the content read (the org
    registry's too) is what the hub's newest seal covers, else
    :class:`~whitelist.seal.WhitelistUnsealed` — what decides a linkage is always read so; a
    look at the rows (a listing, a validation) may read without."""
    return (await _read(pool, sealed_by))[0]


async def _read(
    pool: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    sealed_by: Ed25519PublicKey | None,
) -> tuple[WhitelistIndex, int | None, dict[str, Org]]:
    """(the index, the number of the seal it was read under, the org registry), at one moment."""
    if isinstance(pool, asyncpg.Pool):
        async with pool.acquire() as conn:
            return await _read(conn, sealed_by)
    # One snapshot for the version, the content and the seal (inside a caller's transaction,
    # its own).
    async with contextlib.AsyncExitStack() as snapshot:
        if not pool.is_in_transaction():
            await snapshot.enter_async_context(
                pool.transaction(isolation="repeatable_read", readonly=True)
            )
        version: int = await pool.fetchval("SELECT version FROM whitelist.version")
        rows = await fetch_rows(pool)
        sources = await fetch_sources(pool)
        periods = await fetch_periods(pool)
        registry = await registry_content(pool)
        orgs = await load_orgs(pool)
        sealed = None
        if sealed_by is not None:
            sealed = await check_seal(
                pool, sealed_by, content_digest(rows, sources, periods, registry)
            )
    index = WhitelistIndex(
        rows,
        version=version,
        sources=sources,
        periods={**default_catalog().periods(), **periods},
    )
    return index, sealed, orgs


async def fetch_periods(
    pool: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
) -> dict[tuple[PeriodKind, str], Held]:
    """The periods of tasks and info items the live registry sets (over the catalog's)."""
    rows = await pool.fetch("SELECT kind, id, valid_from, valid_to FROM whitelist.periods")
    return {
        (r["kind"], r["id"]): Held(id=r["id"], valid_from=r["valid_from"], valid_to=r["valid_to"])
        for r in rows
    }


# The source each change of a task's or an info item's period is recorded as a load of.
PERIODS_SOURCE = Source(
    id="catalog-periods",
    title="事務及び特定個人情報の期間（カタログ） / periods of tasks and info items",
    citation="{item}",
    valid_from=dt.date(2015, 10, 5),
)


async def set_period(
    pool: asyncpg.Pool,
    kind: PeriodKind,
    ident: str,
    valid_from: dt.date | None,
    valid_to: dt.date | None,
    *,
    by: str,
    effective: dt.date,
    hub: Ed25519PrivateKey,
) -> LoadOutcome:
    """Set the period of task or info item ``ident`` in the live registry, recorded as a load
    of :data:`PERIODS_SOURCE` (who, when, the period before and after); workers take it with
    the index. The caller reviews the operating versions after it, as after any load."""
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise SourceRefused(f"{kind} {ident}: valid_to {valid_to} is not after {valid_from}")
    async with pool.acquire() as conn, conn.transaction():
        await seal_begin(conn, hub)
        was = (await fetch_periods(conn)).get((kind, ident)) or default_catalog().periods().get(
            (kind, ident)
        )
        await conn.execute(
            "INSERT INTO whitelist.periods (kind, id, valid_from, valid_to, set_by)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, id) DO UPDATE SET"
            " valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to,"
            " set_by = EXCLUDED.set_by, set_at = now()",
            kind,
            ident,
            valid_from,
            valid_to,
            by,
        )
        src = PERIODS_SOURCE
        stamped = await conn.fetchrow(
            f"INSERT INTO whitelist.sources ({_SOURCE_COLUMNS})"
            " VALUES ($1,$2,$3,$4,NULL,NULL,NULL,NULL,'',$5,now(),NULL)"
            " ON CONFLICT (id) DO UPDATE SET loaded_by = EXCLUDED.loaded_by, loaded_at = now()"
            f" RETURNING {_SOURCE_COLUMNS}",
            src.id,
            src.title,
            src.citation,
            src.valid_from,
            by,
        )

        def period(h: Held | None) -> str:
            if h is None or (h.valid_from is None and h.valid_to is None):
                return "always"
            return f"{h.valid_from or 'from the start'} to {h.valid_to or 'open'}"

        now = Held(id=ident, valid_from=valid_from, valid_to=valid_to)
        line = f"~ {kind} {ident}: in force {period(now)} (was {period(was)})"
        load_id: int = await conn.fetchval(
            "INSERT INTO whitelist.loads (source, file_name, content_hash, loaded_by, against,"
            " effective, rows, added, removed, changed, diff)"
            " VALUES ($1, $2, '', $3, NULL, $4, 0, 0, 0, 1, $5::text::jsonb) RETURNING id",
            src.id,
            f"{kind} {ident}",
            by,
            effective,
            json.dumps([line], ensure_ascii=False),
        )
        await seal_close(conn, hub)
        version = await _bump(conn)
    return LoadOutcome(
        load_id=load_id,
        version=version,
        source=Source(**dict(stamped or {})),
        diff=RowDiff(against=None),
        effective=effective,
        note=line,
    )


def owner_of(source: Source) -> str:
    """Whose law ``source`` is, in words: a body's own ordinance, or national law."""
    return f"{source.body}'s own ordinance" if source.body else "national law (no body's own)"


class SourceRefused(ValueError):
    """A load the store cannot take (an unknown source to supersede, a period that cannot
    close the one it supersedes)."""


class LoadOutcome(BaseModel):
    """One load, as recorded: the source as stored, the diff, the version it made."""

    load_id: int
    version: int
    source: Source
    diff: RowDiff
    closed: Source | None = None
    effective: dt.date
    note: str | None = None  # a change of a period (set_period): what changed


async def load_source(
    pool: asyncpg.Pool,
    source: Source,
    rows: Sequence[WhitelistRow],
    *,
    file_name: str,
    effective: dt.date,
    hub: Ed25519PrivateKey,
) -> LoadOutcome:
    """Replace ``source`` and its rows in one transaction and record the load, sealed with
    ``hub`` (the hub's key).

    The diff compares with the source's rows before the load, or — its first load — with the
    rows of the source it supersedes. A source it supersedes ends where it begins; a source
    superseded by another that is already loaded keeps ending where its successor begins.
    """
    async with pool.acquire() as conn, conn.transaction():
        await seal_begin(conn, hub)
        stored = {s.id: s for s in await fetch_sources(conn)}
        was = stored.get(source.id)
        if was is not None and was.body != source.body:
            raise SourceRefused(
                f"{source.id} is {owner_of(was)}; a load cannot make it {owner_of(source)}"
            )
        successors = [s for s in stored.values() if s.supersedes == source.id]
        for nxt in successors:
            if source.valid_to is None or source.valid_to > nxt.valid_from:
                source = source.model_copy(update={"valid_to": nxt.valid_from})
        if source.valid_to is not None and source.valid_to <= source.valid_from:
            raise SourceRefused(
                f"{source.id}: valid_to {source.valid_to} is not after valid_from"
                f" {source.valid_from}"
            )
        previous = await fetch_rows(conn, "source = $1", source.id)
        # Rows of a source loaded before sources were recorded count as its previous load.
        against: str | None = source.id if source.id in stored or previous else None
        closed: Source | None = None
        if source.supersedes is not None:
            old = stored.get(source.supersedes)
            if old is None:
                raise SourceRefused(
                    f"{source.id} supersedes {source.supersedes!r}, which is not loaded"
                    f" (loaded: {', '.join(sorted(stored)) or 'none'})"
                )
            if old.valid_from >= source.valid_from:
                raise SourceRefused(
                    f"{source.id} begins on {source.valid_from}, not after {old.id}"
                    f" (in force from {old.valid_from}), so it cannot supersede it"
                )
            if old.valid_to is None or old.valid_to > source.valid_from:
                closed = old.model_copy(update={"valid_to": source.valid_from})
                await conn.execute(
                    "UPDATE whitelist.sources SET valid_to = $2 WHERE id = $1",
                    old.id,
                    source.valid_from,
                )
            if not previous:
                previous = await fetch_rows(conn, "source = $1", old.id)
                against = old.id
        diff = diff_rows(previous, rows, against)
        stamped = await conn.fetchrow(
            f"INSERT INTO whitelist.sources ({_SOURCE_COLUMNS})"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,now(),$11)"
            " ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title,"
            " citation = EXCLUDED.citation, valid_from = EXCLUDED.valid_from,"
            " valid_to = EXCLUDED.valid_to, stand_in_from = EXCLUDED.stand_in_from,"
            " stand_in_note = EXCLUDED.stand_in_note, supersedes = EXCLUDED.supersedes,"
            " content_hash = EXCLUDED.content_hash, loaded_by = EXCLUDED.loaded_by,"
            " loaded_at = now(), body = EXCLUDED.body"
            f" RETURNING {_SOURCE_COLUMNS}",
            source.id,
            source.title,
            source.citation,
            source.valid_from,
            source.valid_to,
            source.stand_in_from,
            source.stand_in_note,
            source.supersedes,
            source.content_hash,
            source.loaded_by,
            source.body,
        )
        await conn.execute("DELETE FROM whitelist.rows WHERE source = $1", source.id)
        await conn.copy_records_to_table(
            "rows",
            schema_name="whitelist",
            columns=[c.strip() for c in _COLUMNS.split(",")],
            records=[_as_record(r) for r in rows if r.source == source.id],
        )
        load_id: int = await conn.fetchval(
            "INSERT INTO whitelist.loads (source, file_name, content_hash, loaded_by, against,"
            " effective, rows, added, removed, changed, diff, body)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11::text::jsonb,$12) RETURNING id",
            source.id,
            file_name,
            source.content_hash,
            source.loaded_by,
            against,
            effective,
            len(rows),
            len(diff.added),
            len(diff.removed),
            len(diff.changed),
            json.dumps(diff.lines(limit=1000), ensure_ascii=False),
            source.body,
        )
        await seal_close(conn, hub)
        version = await _bump(conn)
    return LoadOutcome(
        load_id=load_id,
        version=version,
        source=Source(**dict(stamped or {})),
        diff=diff,
        closed=closed,
        effective=effective,
    )


class LiveWhitelist(Followed):
    """An in-memory index kept current by PostgreSQL LISTEN/NOTIFY (:mod:`whitelist.live`).

    Decisions read :attr:`index`, a plain attribute swap away from the newest rows; they never
    wait on the database. :attr:`orgs` (the org registry) is reloaded with it, and
    :attr:`controls` (the PIAs and suspensions, :mod:`whitelist.controls`) is kept current beside
    it on a channel of its own, by the same listening connection.
    """

    channel = CHANNEL
    what = "whitelist"

    def __init__(
        self, dsn: str, *, sealed_by: Ed25519PublicKey | None, role: str | None = APP_ROLE
    ) -> None:
        """``sealed_by``: the hub's public key, whose seal the content must carry (``None``
        only where nothing is decided with it, a tool's look at the rows)."""
        super().__init__()
        self._sealed_by = sealed_by
        self._loaded = False
        self._seal = -1  # the number of the seal the index holds (sealed_by given)
        self.index = WhitelistIndex([])
        self.orgs = LiveOrgs()  # the org registry, reloaded with the index
        self.controls = LiveControls(sealed_by)  # its events signed by the same hub
        self._listener = Listener(dsn, [self.controls, self], role=role)

    async def start(self) -> LiveWhitelist:
        """Load the index (and the controls) and start listening for changes."""
        await self._listener.start()
        return self

    async def stop(self) -> None:
        await self._listener.stop()

    def bind(self, catalog: Catalog) -> Catalog:
        """``catalog`` with its orgs read live from the org registry (see :mod:`whitelist.orgs`);
        ``catalog``'s own orgs stand in while the registry holds none."""
        if isinstance(catalog.orgs, LiveOrgs):
            return catalog
        return catalog.model_copy(update={"orgs": self.orgs.with_fallback(catalog.orgs)})

    @property
    def version(self) -> int:
        return self.index.version

    async def load(self, conn: asyncpg.Connection) -> None:
        try:
            fresh, sealed, orgs = await _read(conn, self._sealed_by)
        except WhitelistUnsealed as err:
            if not self._loaded:
                raise  # nothing to decide with: the process does not start
            if err.sealed is not None and err.sealed > self._seal:
                # The hub sealed a newer whitelist (a row removed, say) that cannot be read as
                # sealed: deciding with the old one could permit what the law no longer does.
                log.error("whitelist unreadable as sealed: every linkage refused: %s", err)
                self.index = WhitelistIndex([], version=self.index.version)
                self._seal = err.sealed
            else:
                log.error("whitelist not reloaded, keeping version %s: %s", self.index.version, err)
            return
        self._loaded = True
        # Newer is the hub's word (the seal's number) where seals are read, not the version
        # number (anyone who writes the tables can set it).
        if (sealed is not None and sealed >= self._seal) or (
            sealed is None and fresh.version >= self.index.version
        ):
            self._seal = sealed if sealed is not None else self._seal
            self.orgs.replace(orgs)
            self.index = fresh
            log.info("whitelist index now at version %s (%s rows)", fresh.version, len(fresh))
