"""The registry of parties' public keys, each entry signed by the hub.

Who may read what follows from these keys: the hub seals a provider's code for a subject to the
provider's sealing key registered here, and a party's signatures (its answers, its records)
verify against its signing key here. An entry counts only if the hub's signature over it holds,
so a row written into the table by anyone else is ignored.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from renkei.kernel.keys import PublicKeys, signature_holds
from renkei.kernel.records import revocation_message, revocations


def _message(p: PublicKeys) -> bytes:
    return f"renkei/party/v1|{p.party}|{p.signing}|{p.sealing}".encode()


# The reason the hub states when a party's keys are replaced by new ones (a rotation, not a loss):
# what the replaced key signed before still counts where its time is known (the records) or
# where it signed for good (a version's approval); a key revoked for any other reason, for
# cause, counts for nothing it signs.
REPLACED = "replaced by new keys"


async def register(pool: asyncpg.Pool, hub: Ed25519PrivateKey, public: PublicKeys) -> None:
    """Publish ``public`` as its party's current keys, revoking any earlier ones."""
    signature = base64.b64encode(hub.sign(_message(public))).decode()
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval(
            "SELECT signing_id FROM trust.parties WHERE party = $1 AND revoked_at IS NULL",
            public.party,
        )
        if current == public.signing_id:
            return
        if current is not None:
            await _revoke(conn, hub, public.party, current, REPLACED, None)
        await conn.execute(
            "INSERT INTO trust.parties (party, signing_public, sealing_public, signing_id,"
            " sealing_id, hub_signature) VALUES ($1, $2, $3, $4, $5, $6)",
            public.party,
            public.signing,
            public.sealing,
            public.signing_id,
            public.sealing_id,
            signature,
        )


async def revoke(
    pool: asyncpg.Pool,
    hub: Ed25519PrivateKey,
    party: str,
    *,
    reason: str,
    at: dt.datetime | None = None,
    signing_id: str | None = None,
) -> list[str]:
    """Stop counting ``party``'s current keys from ``at`` (default: now, by the database's
    clock; earlier when the key is known to have been lost before); the key ids revoked.
    Current is the hub's word: every key of ``party``'s whose registry entry the hub signed
    and that no revocation the hub signed names yet, whatever its row says (a row anyone with
    the application's role marked revoked, or a row the hub never signed, decides nothing).
    ``signing_id``: that key of ``party``'s instead, current or replaced since (a key replaced
    in a rotation and found lost later).

    The revocation is the hub's signed statement, appended for good (migration 0026): what
    the key signs from then on does not count, whatever time its holder gives it; and, for
    any reason but :data:`REPLACED`, no approval it signed counts at all."""
    verifier = hub.public_key()
    done: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        stated = await revocations(conn, verifier)
        for r in await conn.fetch(
            "SELECT signing_public, sealing_public, signing_id, hub_signature, revoked_at"
            " FROM trust.parties WHERE party = $1",
            party,
        ):
            p = PublicKeys(party=party, signing=r["signing_public"], sealing=r["sealing_public"])
            if not signature_holds(verifier, r["hub_signature"], _message(p)):
                continue  # not the hub's word
            try:
                kid = p.signing_id
            except ValueError:
                continue
            if r["signing_id"] != kid or kid in done:
                continue
            if signing_id is None and (party, kid) in stated:
                continue  # revoked already, in the hub's word
            if signing_id is not None and kid != signing_id:
                continue
            if r["revoked_at"] is None:
                await _revoke(conn, hub, party, kid, reason, at)
            else:  # the row's time stays the earliest; the statement is added
                await _state(conn, hub, party, kid, reason, at)
            done.append(kid)
    return done


async def _revoke(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    hub: Ed25519PrivateKey,
    party: str,
    signing_id: str,
    reason: str,
    at: dt.datetime | None,
) -> None:
    when = await _state(conn, hub, party, signing_id, reason, at)
    await conn.execute(
        "UPDATE trust.parties SET revoked_at = $3 WHERE party = $1 AND signing_id = $2",
        party,
        signing_id,
        when,
    )


async def _state(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    hub: Ed25519PrivateKey,
    party: str,
    signing_id: str,
    reason: str,
    at: dt.datetime | None,
) -> dt.datetime:
    """Append the hub's signed statement revoking ``party``'s ``signing_id``; from when."""
    when: dt.datetime = at or await conn.fetchval("SELECT clock_timestamp()")
    statement = revocation_message(party, signing_id, when, reason)
    await conn.execute(
        "INSERT INTO trust.revocations (party, signing_id, revoked_at, reason, hub_signature)"
        " VALUES ($1, $2, $3, $4, $5)",
        party,
        signing_id,
        when,
        reason,
        base64.b64encode(hub.sign(statement)).decode(),
    )
    return when


# A TLS certificate's revocation is a statement in the same table, for the key id
# ``tls:<serial, hex>``: no signing key has such an id, so it revokes no key, only that
# certificate of that party at the gateway.
CERTIFICATE = "tls:"


def certificate_id(serial: int) -> str:
    """The id a revocation gives ``serial``'s certificate (in place of a signing key's id)."""
    return f"{CERTIFICATE}{serial:x}"


async def revoke_certificate(
    pool: asyncpg.Pool, hub: Ed25519PrivateKey, party: str, serial: int, *, reason: str
) -> None:
    """Revoke ``party``'s TLS certificate ``serial`` from now: the hub's signed statement,
    appended for good (migration 0026); the gateway refuses the certificate once it reads it."""
    async with pool.acquire() as conn, conn.transaction():
        await _state(conn, hub, party, certificate_id(serial), reason, None)


async def revoked_certificates(
    pool: asyncpg.Pool, hub: Ed25519PublicKey
) -> frozenset[tuple[str, int]]:
    """(party, serial) of every TLS certificate the hub revoked: a statement the hub did not
    sign counts for nothing."""
    async with pool.acquire() as conn:
        stated = await revocations(conn, hub)
    found = set()
    for party, signing_id in stated:
        if signing_id.startswith(CERTIFICATE):
            with contextlib.suppress(ValueError):
                found.add((party, int(signing_id.removeprefix(CERTIFICATE), 16)))
    return frozenset(found)


async def _signed(
    pool: asyncpg.Pool, hub: Ed25519PublicKey, *, with_revoked: bool
) -> list[PublicKeys]:
    """The registry's entries the hub signed (a row anyone else wrote is ignored); with
    ``with_revoked``, each party's current entry first, then its revoked ones."""
    return [p for p, _ in await _signed_entries(pool, hub, with_revoked=with_revoked)]


async def _signed_entries(
    pool: asyncpg.Pool, hub: Ed25519PublicKey, *, with_revoked: bool
) -> list[tuple[PublicKeys, bool]]:
    """:func:`_signed`, each entry with whether it is revoked.

    Whether an entry is revoked is the hub's word too: a key with a revocation the hub signed
    (``trust.revocations``) is revoked whatever its row says, so a row of an old key written
    again (its hub signature is over the keys alone, and holds) never makes that key current
    again; a row marked revoked counts as revoked (marking one is no one's gain but a denial).
    A row whose key id is not its key's is not the hub's word: ignored."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT party, signing_public, sealing_public, signing_id, hub_signature,"
            " revoked_at IS NOT NULL AS revoked FROM trust.parties"
            " ORDER BY party, revoked_at DESC NULLS FIRST"
        )
        stated = await revocations(conn, hub)
    found = []
    for r in rows:
        p = PublicKeys(party=r["party"], signing=r["signing_public"], sealing=r["sealing_public"])
        if not signature_holds(hub, r["hub_signature"], _message(p)):
            continue  # not the hub's word: ignored
        try:
            kid = p.signing_id
        except ValueError:
            continue
        if r["signing_id"] != kid:
            continue  # a row naming another key id than its key's
        revoked = bool(r["revoked"]) or (p.party, kid) in stated
        if revoked and not with_revoked:
            continue
        found.append((p, revoked))
    # Each party's current entry first (then its revoked ones, newest first as read).
    found.sort(key=lambda e: (e[0].party, e[1]))  # stable: as read within each
    return found


async def current(pool: asyncpg.Pool, hub: Ed25519PublicKey) -> dict[str, PublicKeys]:
    """Every party's current keys whose registry entry the hub signed."""
    return {p.party: p for p in await _signed(pool, hub, with_revoked=False)}


async def signing_keys(pool: asyncpg.Pool, hub: Ed25519PublicKey, party: str) -> dict[str, str]:
    """``party``'s signing keys whose registry entry the hub signed, by key id: its current one
    and those replaced since in a rotation (:data:`REPLACED`), never one the hub revoked for
    any other reason (lost, stolen). What ``party`` signed for good (a version's approval),
    naming its key's id, is checked against these."""
    async with pool.acquire() as conn:
        for_cause = await _revoked_for_cause(conn, hub, party)
    return {
        p.signing_id: p.signing
        for p, _ in await _signed_entries(pool, hub, with_revoked=True)
        if p.party == party and p.signing_id not in for_cause
    }


async def _revoked_for_cause(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, hub: Ed25519PublicKey, party: str
) -> set[str]:
    """The key ids of ``party``'s that a revocation the hub signed names for a reason other
    than :data:`REPLACED`."""
    found: set[str] = set()
    for r in await conn.fetch(
        "SELECT signing_id, revoked_at, reason, hub_signature FROM trust.revocations"
        " WHERE party = $1 AND reason <> $2 AND hub_signature IS NOT NULL",
        party,
        REPLACED,
    ):
        message = revocation_message(party, r["signing_id"], r["revoked_at"], r["reason"])
        if signature_holds(hub, r["hub_signature"], message):
            found.add(r["signing_id"])
    return found


async def sealing_keys(
    pool: asyncpg.Pool, hub: Ed25519PublicKey
) -> dict[str, list[X25519PublicKey | None]]:
    """Every party's public sealing keys whose registry entry the hub signed: the current one
    first, then the revoked ones (payloads written to them in the past still open). A party
    whose every key is revoked has ``None`` first: nothing is to be sealed to it any more."""
    out: dict[str, list[X25519PublicKey | None]] = {}
    for p, revoked in await _signed_entries(pool, hub, with_revoked=True):
        listed = out.setdefault(p.party, [])
        if not listed and revoked:
            listed.append(None)
        listed.append(p.sealer())
    return out
