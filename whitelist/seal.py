"""The whitelist's seal: the hub's signature over exactly the rows, sources and periods in force.

The whitelist is rows in PostgreSQL, and whoever can write them (the application's role, an
operator's session) could add a row the law does not have, widen a row's scope, or keep a
superseded source in force; the hub and every provider's gate would then decide with it. Each
change the platform makes (a load, a period set, rows upserted or deleted) therefore appends a
seal in the same transaction: the hub's signature over the digest of the whole content after
the change, and over the seal's own number. A process reads the whitelist only together with its
newest seal whose signature holds, and takes it only if the content it read has that digest
(:func:`check`): a row written any other way makes the read fail, and the process keeps the
whitelist it had (a worker starting has none: it does not start).

The seals are appended, never changed (a trigger refuses it to every role): the newest that holds
is the one that counts. A seal copied under a later number does not hold (its number is signed),
and rows a seal does not cover do not pass under another. Whoever holds the hub's key can seal
what it likes, as it can sign permits: the seal is the hub's word, checked by every party
against the hub's key it pinned.
"""

from __future__ import annotations

import base64
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


def content_digest(
    rows: Iterable[WhitelistRow],
    sources: Iterable[Source],
    periods: Mapping[tuple[PeriodKind, str], Held],
) -> str:
    """The digest of what decides a linkage: every row, every source, every period set."""
    content = {
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
            "the whitelist's rows, sources or periods are not what the hub sealed"
            " (written in the database some other way than by a load)",
            sealed[0],
        )
    return sealed[0]
