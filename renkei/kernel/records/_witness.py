"""Witness checkpoints, exported heads and the verification of every chain."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel

from renkei.kernel import attest
from renkei.kernel.keys import signature_holds, signing_public
from renkei.kernel.records._chain import (
    GENESIS,
    HUB,
    AccessRecord,
    Conn,
    RecordSigner,
    _batch_message,
    _canonical,
    _entry_message,
    _from_row,
    _link_message,
    _record_message,
    entry_hash,
    may_chain,
    may_write,
    record_hash,
)
from renkei.kernel.records._outcomes import OUTCOMES_CHAIN, AttemptOutcome, outcome_message
from renkei.kernel.records._outcomes import outcome_hash as _outcome_hash

# -- checkpoints (witnessing) and verification --


def _checkpoint_message(keeper: str, seq: int, digest: str, at: dt.datetime) -> bytes:
    return f"renkei/checkpoint/v1|{keeper}|{seq}|{digest}|{_canonical(at)}".encode()


def key_id(signer: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = signer.public_key() if isinstance(signer, Ed25519PrivateKey) else signer
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Checkpoint(BaseModel):
    """A party's signature over a chain's head: what that party saw, at that moment."""

    keeper: str
    chain_seq: int
    record_hash: str
    signed_at: dt.datetime
    key_id: str
    signature: str
    signer: str = HUB


def witnesses(party: str, keeper: str) -> bool:
    """Whether ``party`` signs the heads of ``keeper``'s chain.

    Every chain is witnessed by a party other than each of its writers: the hub witnesses every
    org's chain (which the hub and the org write), and each org witnesses the hub's chain and its
    own (into which the hub writes the org's side as requester). Rewriting a chain, even with its
    writer's key, then leaves it differing from what a witness signed.
    """
    if party == HUB:
        return keeper != HUB
    return keeper in (HUB, party)


async def checkpoint(
    pool: asyncpg.Pool, signer: Ed25519PrivateKey | RecordSigner
) -> list[Checkpoint]:
    """Sign the current head of every chain ``signer``'s party witnesses (already signed: skipped).

    A bare key signs as the hub.
    """
    if isinstance(signer, Ed25519PrivateKey):
        signer = RecordSigner(HUB, signer)
    made: list[Checkpoint] = []
    kid = key_id(signer.key)
    async with pool.acquire() as conn, conn.transaction():
        # Heads only (positions and hashes): a party may read those of every chain it witnesses.
        heads = await conn.fetch("SELECT keeper, chain_seq, record_hash FROM records.chain_heads()")
        for h in heads:
            if not witnesses(signer.party, h["keeper"]):
                continue
            at = dt.datetime.now(dt.UTC)
            signature = signer.key.sign(
                _checkpoint_message(h["keeper"], h["chain_seq"], h["record_hash"], at)
            )
            cp = Checkpoint(
                keeper=h["keeper"],
                chain_seq=h["chain_seq"],
                record_hash=h["record_hash"],
                signed_at=at,
                key_id=kid,
                signature=base64.b64encode(signature).decode(),
                signer=signer.party,
            )
            status = await conn.execute(
                "INSERT INTO records.checkpoints"
                " (keeper, chain_seq, record_hash, signed_at, key_id, signature, signer)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                *cp.model_dump().values(),
            )
            if status.endswith(" 1"):
                made.append(cp)
    return made


class Head(BaseModel):
    """One chain's head as exported for safekeeping elsewhere (an auditor's, a citizen's copy)."""

    keeper: str
    chain_seq: int
    record_hash: str


async def heads(pool: asyncpg.Pool) -> list[Head]:
    """Every chain's current head."""
    rows = await pool.fetch("SELECT keeper, chain_seq, record_hash FROM records.chain_heads()")
    return [Head(**dict(r)) for r in rows]


class Break(BaseModel):
    """The first broken link of one keeper's chain."""

    keeper: str
    chain_seq: int
    problem: str


class Verification(BaseModel):
    keepers: int
    records: int
    checkpoints: int
    breaks: list[Break]

    @property
    def ok(self) -> bool:
        return not self.breaks


# How far the time a writer gives its record (or checkpoint) may stray from the moment the
# database stored it (migration 0026) before verify reports it: clocks drift, a write waits for
# a lock; a writer dating what it signs into another time does not fit in this.
CLOCK_TOLERANCE = dt.timedelta(minutes=5)

# How long a record written unchained (migration 0044) may wait for its chainer before verify
# reports it: the chainer links every few hundred milliseconds while its worker runs.
UNCHAINED_BOUND = dt.timedelta(minutes=1)


class PartyKey(NamedTuple):
    party: str
    key: Ed25519PublicKey
    revoked_at: dt.datetime | None

    def valid_at(self, at: dt.datetime | None) -> bool:
        return self.revoked_at is None or (at is not None and at < self.revoked_at)


async def keyring(conn: Conn, hub: Ed25519PublicKey) -> dict[str, PartyKey]:
    """Every party signing key the hub registered, by key id, with when it was revoked: the
    earliest revocation the hub signed (or one carried over from before signed revocations).
    A revocation no one signed, or a registry row the hub did not sign, counts for nothing."""
    revoked = await revocations(conn, hub)
    ring = {key_id(hub): PartyKey(HUB, hub, None)}
    for r in await conn.fetch(
        "SELECT party, signing_public, sealing_public, signing_id, hub_signature FROM trust.parties"
    ):
        message = f"renkei/party/v1|{r['party']}|{r['signing_public']}|{r['sealing_public']}"
        if r["hub_signature"] is None or not signature_holds(
            hub, r["hub_signature"], message.encode()
        ):
            continue  # not the hub's word
        try:
            public = signing_public(r["signing_public"])
        except ValueError:
            continue
        ring.setdefault(
            key_id(public),
            PartyKey(r["party"], public, revoked.get((r["party"], r["signing_id"]))),
        )
    return ring


def revocation_message(party: str, signing_id: str, revoked_at: dt.datetime, reason: str) -> bytes:
    """What the hub signs to revoke ``party``'s signing key ``signing_id`` from ``revoked_at``."""
    at = revoked_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return f"renkei/revocation/v1|{party}|{signing_id}|{at}|{reason}".encode()


async def revocations(conn: Conn, hub: Ed25519PublicKey) -> dict[tuple[str, str], dt.datetime]:
    """(party, signing key id) → from when it no longer counts: the earliest of the hub's
    signed revocations of it (and of those carried over from before them, migration 0026)."""
    found: dict[tuple[str, str], dt.datetime] = {}
    for r in await conn.fetch(
        "SELECT party, signing_id, revoked_at, reason, stated_at, hub_signature"
        " FROM trust.revocations"
    ):
        if r["hub_signature"] is None:
            if r["stated_at"] is not None:
                continue  # unsigned, and not carried over: no one's word
        elif not signature_holds(
            hub,
            r["hub_signature"],
            revocation_message(r["party"], r["signing_id"], r["revoked_at"], r["reason"]),
        ):
            continue
        key = (r["party"], r["signing_id"])
        found[key] = min(found.get(key, r["revoked_at"]), r["revoked_at"])
    return found


def _clock_problem(claimed: dt.datetime | None, stored: dt.datetime | None) -> str | None:
    """A time given by a writer that the database's clock (``stored``) contradicts."""
    if claimed is None or stored is None or abs(claimed - stored) <= CLOCK_TOLERANCE:
        return None
    return (
        f"dated {claimed:%Y-%m-%d %H:%M} UTC by its writer, but stored"
        f" {stored:%Y-%m-%d %H:%M} UTC by the database"
    )


async def _chain(conn: Conn, keeper: str) -> AsyncIterator[asyncpg.Record]:
    async for row in conn.cursor(
        "SELECT * FROM records.access_records WHERE keeper = $1 ORDER BY chain_seq, id", keeper
    ):
        yield row


async def verify(
    pool: asyncpg.Pool,
    hub: Ed25519PrivateKey | Ed25519PublicKey,
    keepers: Sequence[str] | None = None,
    *,
    against: Sequence[Head] = (),
    unchained_for: dt.timedelta = UNCHAINED_BOUND,
) -> Verification:
    """Walk every keeper's chain; report the first broken link of each.

    ``hub`` is the hub's public key (the trust anchor: every other party's key is read from the
    registry the hub signed). Found: a changed, inserted, removed or reordered record; a record
    no party entitled to write it signed (or an unsigned one after signed ones); a chain that
    differs from what a witness signed, or ends before it; a chain that vanished whole (from the
    keeper registry, from the hub's records of the attempts it brokered, or from ``against``, a
    copy of the heads kept elsewhere); a record written unchained that its writer did not sign
    or that changed since, or that no chainer linked within ``unchained_for`` (by the database's
    clock). A record still waiting for its place within that bound is counted, not reported.
    """
    public = hub.public_key() if isinstance(hub, Ed25519PrivateKey) else hub
    breaks: list[Break] = []
    total = 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        ring = await keyring(conn, public)
        overdue = await conn.fetchval("SELECT now()") - unchained_for
        names = (
            list(keepers)
            if keepers
            else [
                r["keeper"]
                for r in await conn.fetch(
                    "SELECT keeper FROM records.access_records UNION"
                    " SELECT keeper FROM records.checkpoints UNION"
                    " SELECT keeper FROM records.keepers UNION"
                    # every requester the hub recorded: a chain deleted whole, with its
                    # checkpoints and its registry entry, still lacks the hub's attempts
                    " SELECT DISTINCT requester FROM records.access_records WHERE keeper = $1"
                    " ORDER BY keeper",
                    HUB,
                )
            ]
        )
        names = sorted({*names, *(h.keeper for h in against if not keepers)})
        checkpoints = await conn.fetch("SELECT * FROM records.checkpoints")
        by_keeper: dict[str, list[asyncpg.Record]] = {}
        for cp in checkpoints:
            by_keeper.setdefault(cp["keeper"], []).append(cp)
        exported = {h.keeper: h for h in against}
        # Chains the keeper registry saw start after records were signed (migration 0012).
        signed_since = await conn.fetchval(
            "SELECT applied_at FROM public.renkei_migrations WHERE name = '0012_signed_records.sql'"
        )
        late = (
            {
                r["keeper"]
                for r in await conn.fetch(
                    "SELECT keeper FROM records.keepers WHERE first_seen > $1", signed_since
                )
            }
            if signed_since is not None
            else set()
        )
        for keeper in names:
            count, found = await _verify_chain(
                conn,
                keeper,
                keeper in late,
                by_keeper.get(keeper, []),
                ring,
                exported.get(keeper),
                overdue,
            )
            total += count
            if found is None and count == 0 and keeper in names:
                registered = await conn.fetchval(
                    "SELECT first_seen FROM records.keepers WHERE keeper = $1", keeper
                )
                if registered is not None:
                    found = Break(
                        keeper=keeper,
                        chain_seq=1,
                        problem=f"the chain vanished: kept since {registered:%Y-%m-%d},"
                        " no record is left",
                    )
            if found is None:
                found = await _missing_requester_records(conn, keeper)
            if found is not None:
                breaks.append(found)
        if not keepers:
            found = await verify_outcomes(conn, ring)
            if found is not None:
                breaks.append(found)
    return Verification(
        keepers=len(names), records=total, checkpoints=len(checkpoints), breaks=breaks
    )


async def verify_outcomes(conn: Conn, ring: dict[str, PartyKey]) -> Break | None:
    """The first broken link of the hub's chain of attempt outcomes: a changed, inserted,
    removed or reordered outcome; one the hub did not sign; one not bound to the hub's record
    of its attempt; a ``provided`` whose kept receipt the provider's key did not sign."""
    expected, prev = 1, GENESIS
    async for row in conn.cursor(
        "SELECT o.*, coalesce(h.entry_hash, h.record_hash) AS hub_hash, h.provider AS hub_provider"
        " FROM records.attempt_outcomes o"
        " LEFT JOIN records.access_records h ON h.keeper = $1 AND h.attempt_key = o.attempt_key"
        " ORDER BY o.chain_seq, o.id",
        HUB,
    ):
        o = AttemptOutcome(**{k: row[k] for k in AttemptOutcome.model_fields})
        seq = o.chain_seq or 0

        def broken(problem: str, at: int = seq) -> Break:
            return Break(keeper=OUTCOMES_CHAIN, chain_seq=at, problem=problem)

        if seq != expected:
            return broken(f"outcome {expected} is missing (found {seq})", expected)
        if o.prev_hash != prev:
            return broken("its previous hash is not its predecessor's hash")
        if _outcome_hash(o) != o.outcome_hash:
            return broken("changed after it was written: its hash does not match")
        if row["hub_hash"] != o.record_hash:
            return broken("not bound to the hub's record of its attempt")
        hub = next((k for k in ring.values() if k.party == HUB), None)
        try:
            if hub is None or o.signer != HUB:
                raise InvalidSignature
            hub.key.verify(
                base64.b64decode(o.signature or ""), outcome_message(seq, o.outcome_hash or "")
            )
        except (InvalidSignature, ValueError):
            return broken("its signature is not the hub's")
        if o.receipt is not None and not any(
            k.party == row["hub_provider"]
            and k.valid_at(o.recorded_at)
            and attest.is_receipt(k.key, o.permit_signature or "", o.answer_digest or "", o.receipt)
            for k in ring.values()
        ):
            return broken("its provider's receipt is not signed with the provider's key")
        expected, prev = seq + 1, o.outcome_hash or ""
    return None


def record_problem(
    rec: AccessRecord, ring: dict[str, PartyKey], stored_at: dt.datetime | None
) -> str | None:
    """What is wrong with one record read on its own, as a reader who sees it without its
    chain (a citizen's page) checks it: its content against the hash its writer signed, and the
    signature, by a party entitled to write that chain, with a key the hub registered and that
    was not revoked when the database stored the record. An unsigned record is no one's word."""
    if rec.signature is None:
        return "unsigned"
    if rec.entry_hash is not None:
        return _entry_problem(rec, ring, True, stored_at)
    if rec.chain_seq is None or record_hash(rec) != rec.record_hash:
        return "its content differs from its hash"
    return _signature_problem(rec, ring, True, stored_at)


def outcome_problem(
    o: AttemptOutcome, bound_to: str | None, ring: dict[str, PartyKey]
) -> str | None:
    """What is wrong with one outcome read on its own: its content against its hash, its bond
    to the hub's record of its attempt (``bound_to``: that record's hash), the hub's signature.
    (Its place in the outcomes' chain is ``verify_outcomes``'s to check.)"""
    if _outcome_hash(o) != o.outcome_hash:
        return "changed after it was written"
    if bound_to is None or bound_to != o.record_hash:
        return "not bound to the hub's record of its attempt"
    hub = next((k for k in ring.values() if k.party == HUB), None)
    try:
        if hub is None or o.signer != HUB:
            raise InvalidSignature
        hub.key.verify(
            base64.b64decode(o.signature or ""),
            outcome_message(o.chain_seq or 0, o.outcome_hash or ""),
        )
    except (InvalidSignature, ValueError):
        return "its signature is not the hub's"
    return None


async def _missing_requester_records(conn: Conn, keeper: str) -> Break | None:
    """The hub records both sides of every attempt it brokers in one transaction: a requester's
    chain that lacks one of them lost it."""
    if keeper == HUB:
        return None
    row = await conn.fetchrow(
        "SELECT h.chain_seq FROM records.access_records h WHERE h.keeper = $1"
        " AND h.requester = $2 AND NOT EXISTS (SELECT 1 FROM records.access_records r"
        " WHERE r.keeper = $2 AND r.attempt_key = h.attempt_key)"
        " ORDER BY h.chain_seq LIMIT 1",
        HUB,
        keeper,
    )
    if row is not None:
        return Break(
            keeper=keeper,
            chain_seq=0,
            problem="lacks its record of the attempt in the hub's record"
            f" {row['chain_seq'] or '(unchained)'} (removed)",
        )
    # ... and the requester's record of it is the hub's writing, saying what the hub's says.
    row = await conn.fetchrow(
        "SELECT r.chain_seq, h.chain_seq AS hub_seq FROM records.access_records h"
        " JOIN records.access_records r ON r.keeper = $2 AND r.attempt_key = h.attempt_key"
        " WHERE h.keeper = $1 AND h.requester = $2 AND h.provider <> $2"
        " AND r.signer IS NOT NULL AND (r.signer <> $1 OR r.outcome <> h.outcome"
        " OR r.provider <> h.provider OR r.info <> h.info OR r.task <> h.task)"
        " ORDER BY r.chain_seq LIMIT 1",
        HUB,
        keeper,
    )
    if row is None:
        return None
    return Break(
        keeper=keeper,
        chain_seq=row["chain_seq"] or 0,  # 0: not linked yet
        problem=f"its record of the attempt in the hub's record {row['hub_seq'] or '(unchained)'}"
        " is not the hub's writing (set down by another, or different)",
    )


async def _verify_chain(
    conn: Conn,
    keeper: str,
    signed_from_start: bool,
    marks: list[asyncpg.Record],
    ring: dict[str, PartyKey],
    exported: Head | None,
    overdue: dt.datetime | None = None,
) -> tuple[int, Break | None]:
    prev = GENESIS
    expected = 1
    count = 0
    # A chain started after records were signed is signed from its first record.
    signed_seen = signed_from_start
    at_seq: dict[int, str] = {}
    wanted = {m["chain_seq"] for m in marks} | ({exported.chain_seq} if exported else set())
    waiting: Break | None = None  # the first record left unchained too long
    # The first of the links since the last signed one: a batch's signature, at its last link,
    # must cover it (it names where the batch began).
    uncovered: int | None = None
    async for row in _chain(conn, keeper):
        count += 1
        rec = _from_row(row)
        if rec.chain_seq is None:  # written, not yet chained (they come last)
            problem = _clock_problem(rec.recorded_at, row["stored_at"]) or _entry_problem(
                rec, ring, signed_seen, row["stored_at"]
            )
            if problem is not None:
                return count, Break(
                    keeper=keeper, chain_seq=expected, problem=f"an unchained record: {problem}"
                )
            stored = row["stored_at"]
            if waiting is None and overdue is not None and stored is not None and stored < overdue:
                waiting = Break(
                    keeper=keeper,
                    chain_seq=expected,
                    problem=f"a record stored {stored:%Y-%m-%d %H:%M:%S} UTC is still not"
                    f" chained: {keeper}'s chainer (its own worker) has not linked it",
                )
            continue
        seq = rec.chain_seq or 0
        if seq != expected:
            problem = (
                f"record {expected} is missing"
                if seq > expected
                else f"record {seq} appears twice or out of order"
            )
            return count, Break(keeper=keeper, chain_seq=expected, problem=problem)
        if rec.prev_hash != prev:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem="does not follow the previous record (inserted, removed or reordered)",
            )
        if record_hash(rec) != rec.record_hash:
            return count, Break(
                keeper=keeper, chain_seq=seq, problem="its content differs from its hash"
            )
        unsigned = _clock_problem(rec.recorded_at, row["stored_at"]) or (
            _signature_problem(rec, ring, signed_seen, row["stored_at"])
            if rec.entry_hash is None
            else _entry_problem(rec, ring, signed_seen, row["stored_at"])
            or _link_problem(rec, ring, row["chained_at"])
        )
        if unsigned is not None:
            return count, Break(keeper=keeper, chain_seq=seq, problem=unsigned)
        if rec.entry_hash is None:
            # Chained as written: no chainer's link to carry, and none to end a batch with.
            if uncovered is not None:
                return count, Break(keeper=keeper, chain_seq=uncovered, problem=_UNCOVERED)
        elif rec.link_signature is None:
            uncovered = seq if uncovered is None else uncovered  # its batch's signature follows
        elif rec.link_from is not None:
            # A batch's end (its signature held, above): the batch begins just after the last
            # link signed before it, at the first of the links waiting for a signature.
            if rec.link_from != (seq if uncovered is None else uncovered):
                return count, Break(
                    keeper=keeper,
                    chain_seq=uncovered or seq,
                    problem=_UNCOVERED if uncovered is not None else _NOT_ITS_BATCH,
                )
            uncovered = None
        elif uncovered is not None:  # signed on its own, after links no signature covered
            return count, Break(keeper=keeper, chain_seq=uncovered, problem=_UNCOVERED)
        signed_seen = signed_seen or rec.signature is not None
        if seq in wanted:
            at_seq[seq] = rec.record_hash or ""
        prev = rec.record_hash or ""
        expected += 1
    if uncovered is not None:
        return count, Break(keeper=keeper, chain_seq=uncovered, problem=_UNCOVERED)
    for mark in sorted(marks, key=lambda m: m["chain_seq"]):
        seq = mark["chain_seq"]
        signer = mark["signer"] or HUB
        if not witnesses(signer, keeper):
            continue  # not a witness of this chain: its word about the chain counts for nothing
        if not _checkpoint_ok(mark, ring, signer):
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"checkpoint signature is not {signer}'s",
            )
        if seq >= expected:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"the chain ends at {expected - 1} but was signed up to {seq} by {signer}",
            )
        if at_seq.get(seq) != mark["record_hash"]:
            return count, Break(
                keeper=keeper,
                chain_seq=seq,
                problem=f"differs from the checkpoint {signer} signed (rewritten)",
            )
    if exported is not None:
        if exported.chain_seq >= expected:
            return count, Break(
                keeper=keeper,
                chain_seq=exported.chain_seq,
                problem=f"the chain ends at {expected - 1} but the exported head is at"
                f" {exported.chain_seq}",
            )
        if at_seq.get(exported.chain_seq) != exported.record_hash:
            return count, Break(
                keeper=keeper,
                chain_seq=exported.chain_seq,
                problem="differs from the exported head (rewritten)",
            )
    return count, waiting


def _signed(
    party: str,
    message: bytes,
    signature: str,
    ring: dict[str, PartyKey],
    at: dt.datetime | None,
) -> str | None:
    """Why ``signature`` over ``message`` is not ``party``'s, with a key valid ``at``; or None."""
    for candidate in ring.values():
        if candidate.party != party:
            continue
        try:
            candidate.key.verify(base64.b64decode(signature), message)
        except (InvalidSignature, ValueError):
            continue
        if not candidate.valid_at(at):
            return f"signed with {party}'s key after it was revoked"
        return None
    return f"its signature is not {party}'s"


def _entry_problem(
    rec: AccessRecord,
    ring: dict[str, PartyKey],
    signed_seen: bool,
    stored_at: dt.datetime | None,
) -> str | None:
    """What is wrong with a record written unchained, as its writer wrote it."""
    if entry_hash(rec) != rec.entry_hash:
        return "its content differs from the hash its writer signed"
    if rec.signature is None:
        return "unsigned, after signed records (written without a key)" if signed_seen else None
    writer = rec.signer or ""
    if not may_write(writer, rec.keeper):
        return f"written by {writer!r}, who may not write {rec.keeper}'s records"
    return _signed(
        writer, _entry_message(rec.keeper, rec.entry_hash or ""), rec.signature, ring, stored_at
    )


_UNCOVERED = (
    "linked without a signature of its keeper's: no batch its keeper's chainer signed covers it"
)
_NOT_ITS_BATCH = "its link names a batch that did not begin where it says"


def _link_problem(
    rec: AccessRecord, ring: dict[str, PartyKey], chained_at: dt.datetime | None
) -> str | None:
    """What is wrong with the link a chainer gave a record written unchained."""
    chainer = rec.chained_by or ""
    if not may_chain(chainer, rec.keeper):
        return f"linked by {chainer!r}, who may not chain {rec.keeper}'s records"
    if rec.link_signature is None:
        return None  # inside a batch: its chainer's signature is at the batch's last link
    seq, digest = rec.chain_seq or 0, rec.record_hash or ""
    problem = _signed(
        chainer,
        _link_message(rec.keeper, seq, digest)
        if rec.link_from is None
        else _batch_message(rec.keeper, rec.link_from, seq, digest),
        rec.link_signature,
        ring,
        chained_at,
    )
    return None if problem is None else f"its link: {problem}"


def _signature_problem(
    rec: AccessRecord,
    ring: dict[str, PartyKey],
    signed_seen: bool,
    stored_at: dt.datetime | None = None,
) -> str | None:
    if rec.chained_by is not None or rec.link_signature is not None or rec.link_from is not None:
        return "chained as written, yet it carries a chainer's link"
    if rec.signature is None:
        # Records from before signatures stand as they are; none may follow a signed one.
        return "unsigned, after signed records (written without a key)" if signed_seen else None
    writer = rec.signer or ""
    if not may_write(writer, rec.keeper):
        return f"written by {writer!r}, who may not write {rec.keeper}'s records"
    for candidate in ring.values():
        if candidate.party != writer:
            continue
        try:
            candidate.key.verify(
                base64.b64decode(rec.signature),
                _record_message(rec.keeper, rec.chain_seq or 0, rec.record_hash or ""),
            )
        except (InvalidSignature, ValueError):
            continue
        # The database's clock when it has one (rows from before keep their own time).
        if not candidate.valid_at(stored_at or rec.recorded_at):
            return f"signed with {writer}'s key after it was revoked"
        return None
    return f"its signature is not {writer}'s"


def _checkpoint_ok(mark: asyncpg.Record, ring: dict[str, PartyKey], signer: str) -> bool:
    found = ring.get(mark["key_id"])
    stored = mark["stored_at"]
    if found is None or found.party != signer or _clock_problem(mark["signed_at"], stored):
        return False
    if not found.valid_at(stored or mark["signed_at"]):
        return False
    try:
        found.key.verify(
            base64.b64decode(mark["signature"]),
            _checkpoint_message(
                mark["keeper"], mark["chain_seq"], mark["record_hash"], mark["signed_at"]
            ),
        )
    except (InvalidSignature, ValueError):
        return False
    return True
