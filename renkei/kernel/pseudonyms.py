"""Agency-specific codes (機関別符号) and their translation by the hub.

Every org knows a subject only by its own code. The hub derives each org's code with a keyed hash
(HMAC-SHA256 under a per-org key that is itself derived from the hub's secret), so codes of two
orgs cannot be linked without the hub's key, and it alone translates one org's code into
another's at each linkage.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import uuid
from collections.abc import Sequence

import asyncpg
from cachetools import LRUCache

log = logging.getLogger(__name__)


class UnknownSubject(LookupError):
    """A code that the hub does not know for the given org. Carries no personal data."""


class IndividualAltered(LookupError):
    """The hub's row for an individual number is not the hub's (its binding does not hold):
    rewritten by someone else, so it names no one. Carries no personal data."""


class InvalidIndividualNumber(ValueError):
    """Not a well-formed individual number. The message never repeats the number."""


PORTAL = "portal"
"""The citizen's own code space: the code a citizen signs in with to read their records."""


def check_digit(first_eleven: str) -> int:
    """The check digit of an individual number (個人番号) from its first eleven digits."""
    total = 0
    for n, digit in enumerate(reversed(first_eleven), start=1):
        total += int(digit) * (n + 1 if n <= 6 else n - 5)
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def check_individual_number(number: str) -> str:
    """``number`` without separators, or :class:`InvalidIndividualNumber`."""
    digits = number.replace("-", "").replace(" ", "")
    if len(digits) != 12 or not digits.isascii() or not digits.isdigit():
        raise InvalidIndividualNumber("an individual number has 12 digits")
    if check_digit(digits[:11]) != int(digits[11]):
        raise InvalidIndividualNumber("the check digit of the individual number is wrong")
    return digits


def number_hash(hub_key: str, number: str) -> str:
    """The keyed hash under which the hub finds a subject by individual number."""
    key = hmac.new(hub_key.encode(), b"renkei/individual-number", hashlib.sha256).digest()
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()


def binding(hub_key: str, hashed: str, subject_id: uuid.UUID) -> str:
    """The hub's MAC over an individual number's keyed hash and its subject: a row of
    ``hub.individuals`` is the hub's only if it carries this."""
    key = hmac.new(hub_key.encode(), b"renkei/individual-binding", hashlib.sha256).digest()
    return hmac.new(key, f"{hashed}|{subject_id}".encode(), hashlib.sha256).hexdigest()


def synthetic_number(subject_id: uuid.UUID) -> str:
    """A well-formed individual number for a synthetic subject (sample data only)."""
    first = f"{subject_id.int % 10**11:011d}"
    return f"{first}{check_digit(first)}"


def org_key(hub_key: str, org: str) -> bytes:
    """The per-org derivation key."""
    return hmac.new(hub_key.encode(), f"renkei/org-key/{org}".encode(), hashlib.sha256).digest()


@functools.lru_cache(maxsize=4096)  # the orgs a hub serves: about 1,700 municipalities, insurers
def _org_key_kept(hub_key: str, org: str) -> bytes:
    return org_key(hub_key, org)


def derive_code(hub_key: str, org: str, subject_id: uuid.UUID) -> str:
    """The code of ``subject_id`` at ``org``: 20 base32 characters, stable and unlinkable."""
    digest = hmac.digest(_org_key_kept(hub_key, org), subject_id.bytes, "sha256")
    # The first 20 characters encode the first 12.5 bytes: 15 bytes (three whole groups of
    # five) give the same 20 as the whole digest, without encoding the rest.
    return base64.b32encode(digest[:15]).decode()[:20]


# How many (org, code) pairs a code store keeps in memory: each about 250 bytes, 25 MiB in all.
CODES_REMEMBERED = 100_000


class Pseudonyms:
    """The hub's code store: enrolment and translation."""

    def __init__(
        self, pool: asyncpg.Pool, hub_key: str, *, remember: int = CODES_REMEMBERED
    ) -> None:
        self._pool = pool
        self._hub_key = hub_key
        # (org, code) -> subject, the most recently used first out: the hub's worker lives for
        # months and meets every citizen in turn; its memory must not grow with them.
        self._cache: LRUCache[tuple[str, str], uuid.UUID] = LRUCache(remember)

    def _known(self, key: tuple[str, str]) -> uuid.UUID | None:
        return self._cache.get(key)

    def _keep(self, key: tuple[str, str], subject: uuid.UUID) -> None:
        self._cache[key] = subject

    async def enroll(self, subject_ids: Sequence[uuid.UUID], orgs: Sequence[str]) -> None:
        """Give every subject a code at every org (idempotent)."""
        records = [(s, o, derive_code(self._hub_key, o, s)) for s in subject_ids for o in orgs]
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO hub.subject_codes (subject_id, org, code) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                records,
            )

    def case_ref(self, executor: str, bpf: str, key: str, code: str) -> str:
        """A case reference for one person's flow that names no one and is stable: the same
        executor, BPF, key (a period, an event id) and code always give the same reference."""
        k = hmac.new(self._hub_key.encode(), b"renkei/case-ref", hashlib.sha256).digest()
        digest = hmac.new(k, f"{executor}|{bpf}|{key}|{code}".encode(), hashlib.sha256).hexdigest()
        return f"{key}-{digest[:20]}"

    async def enroll_number(self, number: str, org: str) -> str:
        """Enrol a person by individual number at ``org``; return the org's code for them.

        The first enrolment of a number creates the hub's subject; later ones (by this org or
        another) find it by the number's keyed hash. The number itself is not stored. The row
        found is taken only with the hub's binding: :class:`IndividualAltered` for one written
        by anyone else (or from before bindings, not yet bound: :func:`bind_before`).
        """
        digits = check_individual_number(number)
        hashed = number_hash(self._hub_key, digits)
        fresh = uuid.uuid4()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO hub.individuals (number_hash, subject_id, binding) VALUES ($1, $2, $3)"
                " ON CONFLICT (number_hash) DO NOTHING",
                hashed,
                fresh,
                binding(self._hub_key, hashed, fresh),
            )
            row = await conn.fetchrow(
                "SELECT subject_id, binding FROM hub.individuals WHERE number_hash = $1", hashed
            )
        assert row is not None
        subject: uuid.UUID = row["subject_id"]
        if not hmac.compare_digest(row["binding"] or "", binding(self._hub_key, hashed, subject)):
            log.error("a row of hub.individuals is not the hub's: refused")
            raise IndividualAltered("the hub's record of this individual number was altered")
        await self.enroll([subject], [org])
        return derive_code(self._hub_key, org, subject)

    async def register_numbers(self, numbers: Sequence[tuple[str, uuid.UUID]]) -> None:
        """Record the individual numbers of subjects the hub already knows (bulk seeding)."""
        hashed = [(number_hash(self._hub_key, check_individual_number(n)), s) for n, s in numbers]
        rows = [(h, s, binding(self._hub_key, h, s)) for h, s in hashed]
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO hub.individuals (number_hash, subject_id, binding) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                rows,
            )

    async def bind_before(self) -> int:
        """Bind the rows enrolled before bindings began (migration 0060), each as it stands,
        where what a row carries is not the hub's binding; return how many. Only those: a row's
        enrolment time is the database's clock (a trigger), so a row the application's role
        adds since is never bound here, and a row's number and subject never change (the
        trigger again), so a binding put back is the row's own. Run at each of the hub's
        starts: a junk binding written on a row from before holds it up until then."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT number_hash, subject_id, binding FROM hub.individuals"
                " WHERE enrolled_at < (SELECT applied_at FROM public.renkei_migrations"
                " WHERE name = '0060_individuals_bound.sql') FOR UPDATE"
            )
            due = [
                (r["number_hash"], own)
                for r in rows
                if not hmac.compare_digest(
                    r["binding"] or "",
                    own := binding(self._hub_key, r["number_hash"], r["subject_id"]),
                )
            ]
            await conn.executemany(
                "UPDATE hub.individuals SET binding = $2 WHERE number_hash = $1", due
            )
        return len(due)

    async def subject_of(self, org: str, code: str) -> uuid.UUID:
        """The subject ``org`` knows by ``code``. The table's row is taken only if the code is
        the one the hub's key derives for that subject at ``org``: a row anyone with the
        application's role rewrote (a code mapped to another person) names no one."""
        key = (org, code)
        found = self._known(key)
        if found is None:
            found = await self._pool.fetchval(
                "SELECT subject_id FROM hub.subject_codes WHERE org = $1 AND code = $2", org, code
            )
            if found is None:
                raise UnknownSubject(f"no subject is enrolled under this code at {org}")
            if not hmac.compare_digest(derive_code(self._hub_key, org, found), code):
                log.error("a row of hub.subject_codes at %s is not the hub's: refused", org)
                raise UnknownSubject(f"no subject is enrolled under this code at {org}")
            self._keep(key, found)
        return found

    async def translate(self, from_org: str, codes: Sequence[str], to_org: str) -> list[str]:
        """Translate ``from_org``'s codes into ``to_org``'s codes."""
        if from_org == to_org:
            return list(codes)
        return [await self.code_at(to_org, await self.subject_of(from_org, c)) for c in codes]

    def derived_code(self, org: str, subject_id: uuid.UUID) -> str:
        """The code ``subject_id`` has, or would have, at ``org``: derived, nothing enrolled
        (to compare with a code one is shown, without writing anything)."""
        return derive_code(self._hub_key, org, subject_id)

    async def code_at(self, org: str, subject_id: uuid.UUID) -> str:
        """The code of a known subject at ``org``, enrolling it there if it is not yet."""
        code = derive_code(self._hub_key, org, subject_id)
        if self._known((org, code)) is None:
            await self.enroll([subject_id], [org])
            self._keep((org, code), subject_id)
        return code
