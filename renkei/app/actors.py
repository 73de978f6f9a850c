"""Who acts: an operator, signed in with its token, acting for one party in one role.

An operator (``renkei operators add NAME --party P --role R``) is a platform operator (the hub's),
the conformance body, or one org's definer or executor. Commands that change who may do what (the
org registry, a BPF version's lifecycle, a transfer of ownership) act as the signed-in operator's
party and role, never as a party the caller types, and record the operator's name. The CLI signs in
with the token in ``RENKEI_OPERATOR_TOKEN``; the HTTP API with ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import os
from typing import Literal

import asyncpg
from pydantic import BaseModel

from renkei.contracts.names import HUB
from renkei.kernel.settings import Settings
from renkei.kernel.tokens import token_hash

ActorRole = Literal["platform-operator", "conformance-body", "definer", "executor"]
ACTOR_ROLES: tuple[ActorRole, ...] = (
    "platform-operator",
    "conformance-body",
    "definer",
    "executor",
)
TOKEN_VARIABLE = "RENKEI_OPERATOR_TOKEN"


class Actor(BaseModel):
    """A signed-in operator: its name, the party it acts for, and its role."""

    name: str
    party: str
    role: ActorRole

    def __str__(self) -> str:
        return f"{self.name} ({self.role} of {self.party})"


class NotSignedIn(PermissionError):
    """No current operator token."""


class NotEntitled(PermissionError):
    """The signed-in operator's role does not allow this."""


def party_problem(settings: Settings, role: str, party: str, known_orgs: object) -> str | None:
    """Why ``party`` cannot hold ``role`` (``None`` when it can)."""
    if role == "platform-operator":
        return None if party == HUB else "a platform operator acts for the hub (--party hub)"
    if role == "conformance-body":
        body = settings.conformance_body
        return None if party == body else f"the conformance body is {body!r} (--party {body})"
    if party == HUB or party not in known_orgs:  # type: ignore[operator]
        return f"a {role} acts for an org: unknown org {party!r}"
    return None


async def actor_of(pool: asyncpg.Pool, token: str | None) -> Actor | None:
    """The operator a current token belongs to."""
    if not token:
        return None
    row = await pool.fetchrow(
        "SELECT name, party, role FROM codec.operators WHERE token_hash = $1"
        " AND revoked_at IS NULL",
        token_hash(token),
    )
    return Actor(**dict(row)) if row else None


async def signed_in(pool: asyncpg.Pool, token: str | None = None) -> Actor:
    """The operator whose token the caller holds (``RENKEI_OPERATOR_TOKEN`` by default)."""
    token = token if token is not None else os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise NotSignedIn(
            f"sign in: set {TOKEN_VARIABLE} to your operator token"
            " (renkei operators add NAME --party PARTY --role ROLE prints one)"
        )
    found = await actor_of(pool, token)
    if found is None:
        raise NotSignedIn(f"{TOKEN_VARIABLE} is not a current operator token (revoked or unknown)")
    return found


def require(actor: Actor, *roles: ActorRole) -> Actor:
    if actor.role not in roles:
        raise NotEntitled(f"{actor} may not do this: it takes a {' or '.join(roles)}")
    return actor
