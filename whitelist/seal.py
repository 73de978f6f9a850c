"""The whitelist's seal: the hub's signature over exactly the rows, sources, periods and org
registry in force.

The whitelist and the org registry are rows in PostgreSQL, and whoever can write them (the
application's role, an operator's session) could add a row the law does not have, widen a row's
scope, keep a superseded source in force, or give an org a role; the hub and every provider's
gate would then decide with it. Each change the platform makes (a load, a period set, rows
upserted or deleted, a change of the registry) therefore runs between :func:`begin` (the tables
locked, and checked against the newest seal: the hub never seals over what it did not write)
and :func:`close`, which appends a seal in the same transaction: the hub's signature over the
digest of the whole content after the change, and over the seal's own number. A process reads
the whitelist only together with its newest seal whose signature holds, and takes it only if
the content it read has that digest (:func:`check`): content written any other way makes the
read fail (what a worker then does: :class:`whitelist.store.LiveWhitelist`).

The seals are appended, never changed (a trigger refuses it to every role), each under the
number its sequence gave it: the newest that holds is the one that counts. A seal copied under a
later number does not hold (its number is signed). Whoever holds the hub's key can seal what it
likes, as it can sign permits: the seal is the hub's word, checked by every party against the
hub's key it pinned.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from renkei.kernel import keys
from whitelist.models import Held, PeriodKind, Source, WhitelistRow

Conn = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Seals looked at for the newest that holds: rows with signatures that do not hold (anyone with
# the application's role can append one) cost a reader no more than these.
SEALS_LOOKED_AT = 64


class WhitelistUnsealed(RuntimeError):
    """The whitelist read is not what the hub sealed (or nothing is sealed). ``sealed``: the
    number of the newest seal that holds, if any."""

    def __init__(self, message: str, sealed: int | None = None) -> None:
        super().__init__(message)
        self.sealed = sealed


# The org registry's columns that decide (who an org is, its kind and standing, the roles it
# holds, the items it serves, the acts it carries out, over their periods), in a fixed order.
REGISTRY: dict[str, tuple[str, ...]] = {
    "orgs": ("id", "ja", "en", "kind", "status", "successor", "merged_on"),
    "org_roles": ("org", "role", "valid_from", "valid_to"),
    "org_serves": ("org", "info", "valid_from", "valid_to"),
    "org_acts": ("org", "action", "basis", "valid_from", "valid_to"),
}
TABLES = ("rows", "sources", "periods", *REGISTRY)


async def registry_content(conn: Conn) -> dict[str, list[list[str | None]]]:
    """The org registry's deciding columns, every row, in a fixed order (values as text)."""
    out: dict[str, list[list[str | None]]] = {}
    for table, columns in REGISTRY.items():
        listed = ", ".join(columns)
        rows = await conn.fetch(f"SELECT {listed} FROM whitelist.{table} ORDER BY {listed}")
        # as text here, not by the server (whose text of a date follows the session's DateStyle)
        texts = [
            [None if v is None else v.isoformat() if isinstance(v, dt.date) else str(v) for v in r]
            for r in rows
        ]
        # in an order of its own (not the database's collation)
        out[table] = sorted(texts, key=lambda r: [(v is None, v or "") for v in r])
    return out


def content_digest(
    rows: Iterable[WhitelistRow],
    sources: Iterable[Source],
    periods: Mapping[tuple[PeriodKind, str], Held],
    registry: Mapping[str, list[list[str | None]]],
) -> str:
    """The digest of what decides a linkage: every row, every source, every period set, and
    the org registry's deciding columns."""
    content = {
        "registry": {t: registry.get(t, []) for t in REGISTRY},
        "rows": sorted(
            (r.model_dump(mode="json") for r in rows), key=lambda r: (r["id"], r["source"])
        ),
        "sources": sorted(
            (s.model_dump(mode="json", exclude={"loaded_at", "loaded_by"}) for s in sources),
            key=lambda s: str(s["id"]),
        ),
        "periods": sorted(
            [kind, ident, held.model_dump(mode="json")] for (kind, ident), held in periods.items()
        ),
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _message(number: int, digest: str) -> bytes:
    return f"renkei/whitelist-seal/v1|{number}|{digest}".encode()


async def seal(conn: Conn, hub: Ed25519PrivateKey, digest: str) -> int:
    """Append the hub's seal over ``digest`` (the content as this transaction leaves it)."""
    number: int = await conn.fetchval("SELECT nextval('whitelist.seals_id_seq')")
    public = hub.public_key()
    await conn.execute(
        "INSERT INTO whitelist.seals (id, digest, signing_id, signature) VALUES ($1, $2, $3, $4)",
        number,
        digest,
        keys.key_id(keys.public_raw(public)),
        base64.b64encode(hub.sign(_message(number, digest))).decode(),
    )
    return number


async def current_digest(conn: Conn) -> str:
    """The digest of the content as ``conn`` sees it now."""
    from whitelist.store import fetch_periods, fetch_rows, fetch_sources  # the store reads

    return content_digest(
        await fetch_rows(conn),
        await fetch_sources(conn),
        await fetch_periods(conn),
        await registry_content(conn),
    )


async def begin(conn: Conn, hub: Ed25519PrivateKey) -> None:
    """Begin a change of the whitelist or the org registry (in ``conn``'s transaction): no one
    else writes their tables until the transaction ends, and it changes only the content the
    hub sealed last. Content written any other way is not sealed over (it would then decide):
    the change is refused until it is gone."""
    await conn.execute(
        f"LOCK TABLE {', '.join(f'whitelist.{t}' for t in TABLES)} IN EXCLUSIVE MODE"
    )
    sealed = await newest(conn, hub.public_key())
    if sealed is None:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM whitelist.seals)"):
            # seals, but none that holds among the newest: rows appended by someone else hide
            # the hub's; what is there now is not taken as the hub's word
            raise WhitelistUnsealed(
                f"none of the newest {SEALS_LOOKED_AT} seals of the whitelist holds: nothing is"
                " changed until the hub's own seal is found again"
            )
        return  # nothing sealed yet: the first seal (a new store, or one from before seals)
    if await current_digest(conn) != sealed[1]:
        raise WhitelistUnsealed(
            "the whitelist or the org registry holds content that no load or registry change"
            " wrote: nothing is changed over it (the hub would seal it); put the sealed content"
            " back first",
            sealed[0],
        )


async def close(conn: Conn, hub: Ed25519PrivateKey) -> int:
    """Seal the content as the change leaves it (the end of what :func:`begin` began)."""
    return await seal(conn, hub, await current_digest(conn))


async def newest(conn: Conn, hub: Ed25519PublicKey) -> tuple[int, str] | None:
    """(number, digest) of the newest seal whose signature holds under ``hub``; ``None`` if
    none does among the newest :data:`SEALS_LOOKED_AT`."""
    for r in await conn.fetch(
        "SELECT id, digest, signature FROM whitelist.seals ORDER BY id DESC LIMIT $1",
        SEALS_LOOKED_AT,
    ):
        if keys.signature_holds(hub, r["signature"], _message(r["id"], r["digest"])):
            return int(r["id"]), str(r["digest"])
    return None


async def check(conn: Conn, hub: Ed25519PublicKey, digest: str) -> int:
    """The number of the newest seal, if ``digest`` (of the content read in the same snapshot)
    is its digest; else :class:`WhitelistUnsealed`."""
    sealed = await newest(conn, hub)
    if sealed is None:
        raise WhitelistUnsealed(
            "the whitelist carries no seal of the hub's (after an upgrade from before seals,"
            " `renkei init` seals the rows as they stand, once)"
        )
    if sealed[1] != digest:
        raise WhitelistUnsealed(
            "the whitelist or the org registry is not what the hub sealed"
            " (written in the database some other way than by a load or a registry change)",
            sealed[0],
        )
    return sealed[0]
