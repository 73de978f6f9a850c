"""Disclosure holds: keeping a flow's records from the citizen's view for a while, lawfully.

An investigation may require that the person investigated does not learn of it at once. A hold
is therefore possible, but never on the executor's word alone:

* its reason comes from a fixed list, each with its legal ground and a longest duration;
* the executor requests it (``request``), and a platform operator — a second party — approves
  it (``approve``); the request and the approval are kept, with who and when;
* the approval is the hub's signature over the request, the operator and the time (the
  application's database role, which operators approve through, could set the columns; it
  cannot sign): a row approved any other way is not approved;
* a request names the person it is about (their code at the executor): the operator approves
  it for that person, the hub's signature covers it, and the hub takes the hold only for them:
  a start (the case's, or a call's) about anyone else carrying it is refused, and a linkage
  about anyone else in a held case is recorded without it (they see it);
* a flow started with a hold names the approved request; the hub refuses the start otherwise
  (``HoldNotApproved``), and every record about its person the flow leaves carries the hold
  (in its hash);
* the citizen sees that a record exists and is withheld until a date, with the reason.

The reasons below are a sample standing in for the ordinance's list.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from renkei.kernel import attest


class HoldReason(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    legal_ground: str
    longest: dt.timedelta


REASONS: dict[str, HoldReason] = {
    r.code: r
    for r in (
        HoldReason(
            code="investigation",
            legal_ground="個人情報保護法第78条第1項第5号（犯罪の捜査等）・サンプル",
            longest=dt.timedelta(days=365),
        ),
        HoldReason(
            code="child-protection",
            legal_ground="児童虐待の防止等に関する法律第13条の4・サンプル",
            longest=dt.timedelta(days=180),
        ),
        HoldReason(
            code="audit",
            legal_ground="個人情報保護法第78条第1項第7号（監査・検査）・サンプル",
            longest=dt.timedelta(days=180),
        ),
    )
}


# How far the application's clock (a request's end is checked against it) and the database's (it
# dates the request) may be apart.
CLOCKS_APART = dt.timedelta(minutes=1)


class HoldNotApproved(ValueError):
    """A hold that no second party approved, or that exceeds what was approved."""


class HoldRequest(BaseModel):
    id: uuid.UUID
    executor: str
    bpf: str
    case_ref: str
    reason: str
    until: dt.datetime
    requested_at: dt.datetime
    requested_by: str
    approved_by: str | None = None
    approved_at: dt.datetime | None = None
    subject: str | None = Field(
        default=None,
        description="the person the hold is about: their code at the executor (none in a"
        " request from before requests named it: it covers its case as it did)",
    )


async def request(
    pool: asyncpg.Pool,
    executor: str,
    bpf: str,
    case_ref: str,
    reason: str,
    until: dt.datetime,
    requested_by: str,
    *,
    subject: str,
) -> HoldRequest:
    """The executor asks for a hold over one case (``bpf`` and its case reference) about one
    person (``subject``: their code at the executor); it counts only once a platform operator
    approves it."""
    found = REASONS.get(reason)
    if found is None:
        raise HoldNotApproved(f"no hold reason {reason!r} (reasons: {', '.join(sorted(REASONS))})")
    now = dt.datetime.now(dt.UTC)
    if until <= now or until - now > found.longest:
        raise HoldNotApproved(
            f"a {reason} hold ends within {found.longest.days} days ({found.legal_ground})"
        )
    row = await pool.fetchrow(
        "INSERT INTO hub.holds (id, executor, bpf, case_ref, reason, until, requested_by,"
        " subject) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        uuid.uuid4(),
        executor,
        bpf,
        case_ref,
        reason,
        until,
        requested_by,
        subject,
    )
    assert row is not None
    return HoldRequest.model_validate(dict(row))


# What the hub's signature on an approval covers: the whole request, who approved it, when.
_APPROVED = (
    "id",
    "executor",
    "bpf",
    "case_ref",
    "reason",
    "until",
    "requested_by",
    "requested_at",
    "approved_by",
    "approved_at",
)


def _approval_message(row: Mapping[str, object]) -> bytes:
    fields = {c: row[c] for c in _APPROVED}
    if row.get("subject") is not None:  # a request from before named no one (migration 0062)
        fields["subject"] = row["subject"]
    return attest.fields_message("hold-approval/v1", fields)


def _approval_holds(row: Mapping[str, object], hub: Ed25519PublicKey) -> bool:
    """Whether ``row``'s approval is the hub's (signed by it)."""
    signature = row["approval_signature"]
    return isinstance(signature, str) and attest.holds(hub, signature, _approval_message(row))


async def sign_before(pool: asyncpg.Pool, hub: Ed25519PrivateKey) -> int:
    """Sign the approvals made before approvals were signed (migration 0061), each as it
    stands, where what it carries is not the hub's signature; return how many. Only those: an
    approval is dated by the database's clock (a trigger), so one the application's role makes
    since is never signed here. Run at each of the hub's starts."""
    public = hub.public_key()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM hub.holds WHERE approved_by IS NOT NULL AND approved_at <"
            " (SELECT applied_at FROM public.renkei_migrations"
            " WHERE name = '0061_hold_approvals_signed.sql') FOR UPDATE"
        )
        due = [dict(r) for r in rows if not _approval_holds(dict(r), public)]
        await conn.executemany(
            "UPDATE hub.holds SET approval_signature = $2 WHERE id = $1",
            [(r["id"], attest.sign(hub, _approval_message(r))) for r in due],
        )
    return len(due)


async def approve(
    pool: asyncpg.Pool, hold: uuid.UUID, operator: str, *, hub: Ed25519PrivateKey
) -> HoldRequest:
    """A platform operator approves a pending request (once; never their own), the approval
    signed with the hub's key ``hub`` over the request, the operator and the time the
    database gave it."""
    async with pool.acquire() as conn, conn.transaction():
        approved = await conn.fetchrow(
            "UPDATE hub.holds SET approved_by = $2, approved_at = clock_timestamp()"
            " WHERE id = $1 AND approved_by IS NULL AND requested_by <> $2"
            " AND subject IS NOT NULL RETURNING *",
            hold,
            operator,
        )
        if approved is None:
            raise HoldNotApproved(f"no pending hold {hold} that {operator} may approve")
        done = await conn.fetchrow(
            "UPDATE hub.holds SET approval_signature = $2 WHERE id = $1 RETURNING *",
            hold,
            attest.sign(hub, _approval_message(dict(approved))),
        )
    assert done is not None
    return HoldRequest.model_validate(dict(done))


async def check(
    pool: asyncpg.Pool,
    executor: str,
    approval: uuid.UUID | None,
    reason: str,
    until: dt.datetime,
    workflow_id: str,
    *,
    hub: Ed25519PublicKey | None,
    subject: str | None = None,
) -> HoldRequest:
    """The approved request a flow's hold stands on, or :class:`HoldNotApproved`.

    ``workflow_id`` is the case's flow (for a child, the flow that called it): an approval
    covers that one case, not every flow of the executor. The approval counts only signed by
    ``hub`` (the hub's public key; ``None``: no approval counts). ``subject``: a run's (the
    executor's code), refused unless the request is about that person (:func:`covers`)."""
    if approval is None:
        raise HoldNotApproved("a disclosure hold needs an approved hold request (approval)")
    row = await pool.fetchrow("SELECT * FROM hub.holds WHERE id = $1", approval)
    found = HoldRequest(**dict(row)) if row is not None else None
    if found is None or found.executor != executor:
        raise HoldNotApproved(f"no hold request {approval} of {executor}")
    if f"{found.bpf}/{found.executor}/{found.case_ref}" != workflow_id:
        raise HoldNotApproved(f"hold request {approval} covers another case")
    if found.approved_by is None:
        raise HoldNotApproved(f"hold request {approval} is not approved yet")
    assert row is not None
    if hub is None or not _approval_holds(dict(row), hub):
        raise HoldNotApproved(
            f"hold request {approval}'s approval is not the platform's (the hub did not sign it)"
        )
    if found.reason != reason or until > found.until:
        raise HoldNotApproved(
            f"the hold differs from the one approved ({found.reason} until {found.until:%Y-%m-%d})"
        )
    # What a request may ask, checked again: a row is the database's (the request was checked
    # when made, and the database dates it: migration 0057).
    lawful = REASONS.get(found.reason)
    if lawful is None or found.until - found.requested_at > lawful.longest + CLOCKS_APART:
        raise HoldNotApproved(
            f"hold request {approval} asks for more than its reason allows"
            + (f" ({lawful.longest.days} days, {lawful.legal_ground})" if lawful else "")
        )
    if subject is not None and not covers(found, subject):
        raise HoldNotApproved(f"hold request {approval} is about another person")
    return found


async def pending(pool: asyncpg.Pool, limit: int = 500) -> list[HoldRequest]:
    """The requests no operator approved yet, oldest first, at most ``limit``: what an operator
    reads before approving one (its case and the person it is about)."""
    rows = await pool.fetch(
        "SELECT * FROM hub.holds WHERE approved_by IS NULL ORDER BY requested_at, id LIMIT $1",
        limit,
    )
    return [HoldRequest.model_validate(dict(r)) for r in rows]


def covers(hold: HoldRequest, subject: str) -> bool:
    """Whether the approved ``hold`` keeps records about ``subject`` (the executor's code) from
    their view: the person its request names (one approved before requests named their person,
    migration 0062, named no one: its whole case; since, none is approved without one)."""
    return hold.subject is None or hold.subject == subject
