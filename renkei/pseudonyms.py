"""Agency-specific codes (機関別符号) and their translation by the hub.

Every org knows a subject only by its own code. The hub derives each org's code with a keyed hash
(HMAC-SHA256 under a per-org key that is itself derived from the hub's secret), so codes of two
orgs cannot be linked without the hub's key, and it alone translates one org's code into
another's at each linkage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence

import asyncpg


class UnknownSubject(LookupError):
    """A code that the hub does not know for the given org. Carries no personal data."""


def org_key(hub_key: str, org: str) -> bytes:
    """The per-org derivation key."""
    return hmac.new(hub_key.encode(), f"renkei/org-key/{org}".encode(), hashlib.sha256).digest()


def derive_code(hub_key: str, org: str, subject_id: uuid.UUID) -> str:
    """The code of ``subject_id`` at ``org``: 20 base32 characters, stable and unlinkable."""
    digest = hmac.new(org_key(hub_key, org), subject_id.bytes, hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:20]


class Pseudonyms:
    """The hub's code store: enrolment and translation."""

    def __init__(self, pool: asyncpg.Pool, hub_key: str) -> None:
        self._pool = pool
        self._hub_key = hub_key
        self._cache: dict[tuple[str, str], uuid.UUID] = {}

    async def enroll(self, subject_ids: Sequence[uuid.UUID], orgs: Sequence[str]) -> None:
        """Give every subject a code at every org (idempotent)."""
        records = [(s, o, derive_code(self._hub_key, o, s)) for s in subject_ids for o in orgs]
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO hub.subject_codes (subject_id, org, code) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                records,
            )

    async def subject_of(self, org: str, code: str) -> uuid.UUID:
        key = (org, code)
        found = self._cache.get(key)
        if found is None:
            found = await self._pool.fetchval(
                "SELECT subject_id FROM hub.subject_codes WHERE org = $1 AND code = $2", org, code
            )
            if found is None:
                raise UnknownSubject(f"no subject is enrolled under this code at {org}")
            self._cache[key] = found
        return found

    async def translate(self, from_org: str, codes: Sequence[str], to_org: str) -> list[str]:
        """Translate ``from_org``'s codes into ``to_org``'s codes."""
        if from_org == to_org:
            return list(codes)
        out = []
        for code in codes:
            subject = await self.subject_of(from_org, code)
            target = derive_code(self._hub_key, to_org, subject)
            self._cache.setdefault((to_org, target), subject)
            out.append(target)
        return out

    async def code_at(self, org: str, subject_id: uuid.UUID) -> str:
        """The code of a known subject at ``org``."""
        return derive_code(self._hub_key, org, subject_id)
