"""Whether a version's registered content is the one the conformance body approved.

In operation, the hub runs a version only if its registered content carries the conformance
body's signed approval (``renkei bpf approve``: :func:`renkei.kernel.attest.version_approval`
over the version, its content hash and the report it approved on). The registry's rows are
the database's: whoever can write them as a superuser (triggers off) could replace a version's
content and its content hash together, and every read that checks content against hash would
take it. The approval's signature is the conformance body's own: no row written in the
database makes one for content the body did not approve.

The check is made as a run starts (``hub.resolve``) and for each linkage the hub brokers
(:class:`activities.claims.Claims`), so a run of content no approval covers gets no data,
however it started. A content found approved is looked at again after :data:`APPROVED_FOR`
seconds (the key that approved it may have been revoked for cause since); one found not approved
after :data:`REFUSED_FOR` seconds (an approval may come); one look at a time for each: runs of a
version do not each make the hub read the registry.

The signature is checked against the key of the conformance body that the approval names by its
id, among the body's keys the hub signed into the key registry, current or since replaced: a key
rotation does not stop the versions approved before it.

For a run, its executor's own word is checked too: each executor puts a version into operation for
itself (``renkei bpf operate``), and its row in ``registry.operated_by`` carries its signature over
the version, the content hash and its name (:func:`renkei.kernel.attest.version_operation`). A row
anyone else added (the application's role can add rows) makes the platform's schedules and scans
ask, but the hub starts nothing, scans nothing and brokers nothing for an executor that did not
sign: :func:`why_not_operated`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

import asyncpg
from cachetools import LRUCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from renkei.kernel import attest, parties

__all__ = [
    "APPROVED_FOR",
    "KEPT",
    "REFUSED_FOR",
    "ROWS_LOOKED_AT",
    "ApprovalCheck",
    "why_not_operated",
]

log = logging.getLogger(__name__)

_Key = tuple[str, int, str, str]

KEPT = 16_384  # (content, executor) pairs remembered: every version of every BPF, many executors
APPROVED_FOR = 30.0  # seconds a content found approved is answered so without a new look
REFUSED_FOR = 1.0  # seconds a content found not approved is answered so without a new look
# Approvals of one content checked at one look, the oldest first, among those naming a key the
# body has (distinct ones): rows with signatures that do not hold, which anyone with the
# application's role can add, cost the hub no more than these (they can deny the version, as
# that role can by moving its state; never run it).
ROWS_LOOKED_AT = 64


class ApprovalCheck:
    """The conformance body's approval of a version's registered content, checked."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        hub: Ed25519PublicKey,
        body: str,
        *,
        accept_unsigned: Collection[str] = (),
    ) -> None:
        """``body``: the conformance body (``RENKEI_CONFORMANCE_BODY``). ``accept_unsigned``:
        the migration switch ``RENKEI_ACCEPT_UNSIGNED_APPROVALS``, the content hashes of the
        versions put into operation before approvals were signed, as the operator listed them
        at the upgrade: a version of such content runs without an approval, with a warning;
        any other content (a version registered since, content replaced) never does."""
        self._pool = pool
        self._hub = hub
        self._body = body
        self._accept_unsigned = frozenset(accept_unsigned)
        # (bpf, version, content hash, executor or "") -> the look in flight: calls that miss
        # meanwhile share it
        self._looking: dict[_Key, asyncio.Future[str | None]] = {}
        # (bpf, version, content hash, executor or "") -> when it was found approved (counted
        # for APPROVED_FOR seconds, as the module says at the time of the look)
        self._approved: LRUCache[_Key, float] = LRUCache(KEPT)
        # (bpf, version, content hash, executor or "") -> (when it was found not approved, why)
        self._refused: LRUCache[_Key, tuple[float, str]] = LRUCache(KEPT)

    async def why_not(
        self, bpf: str, version: int, content_hash: str, executor: str | None = None
    ) -> str | None:
        """Why ``bpf`` ``version`` with ``content_hash`` is not approved, or (with ``executor``)
        not put into operation by ``executor``'s own signature; ``None`` if it is."""
        key = (bpf, version, content_hash, executor or "")
        approved = self._approved.get(key)
        if approved is not None and time.monotonic() - approved < APPROVED_FOR:
            return None
        refused = self._refused.get(key)
        if refused is not None and time.monotonic() - refused[0] < REFUSED_FOR:
            return refused[1]
        looking = self._looking.get(key)
        if looking is None:
            looking = self._looking[key] = asyncio.ensure_future(
                self._look(bpf, version, content_hash, executor)
            )
            looking.add_done_callback(lambda _: self._looking.pop(key, None))
        # a caller cancelled does not cancel the others' look
        why = await asyncio.shield(looking)
        if why is None:
            self._refused.pop(key, None)
            self._approved[key] = time.monotonic()
        else:
            self._approved.pop(key, None)
            self._refused[key] = (time.monotonic(), why)
        return why

    async def _look(
        self, bpf: str, version: int, content_hash: str, executor: str | None
    ) -> str | None:
        listed = content_hash in self._accept_unsigned  # the operator's list pins the content
        if listed:
            log.warning(
                "%s v%s runs on a content listed in RENKEI_ACCEPT_UNSIGNED_APPROVALS", bpf, version
            )
        else:
            approved = await self._approval(bpf, version, content_hash)
            if approved is not None:
                return approved
        if executor is None:
            return None
        return await why_not_operated(
            self._pool, self._hub, bpf, version, content_hash, executor, before_signing=listed
        )

    async def _approval(self, bpf: str, version: int, content_hash: str) -> str | None:
        keys = await parties.signing_keys(self._pool, self._hub, self._body)
        signed = await self._pool.fetch(
            "SELECT report_hash, signing_id, signature FROM ("
            " SELECT DISTINCT ON (report_hash, signing_id, signature)"
            " report_hash, signing_id, signature, id FROM registry.approvals"
            " WHERE bpf = $1 AND version = $2 AND content_hash = $3 AND signer = $4"
            " AND signing_id = ANY($5::text[])"
            " ORDER BY report_hash, signing_id, signature, id) distinct_rows"
            " ORDER BY id LIMIT $6",
            bpf,
            version,
            content_hash,
            self._body,
            list(keys),
            ROWS_LOOKED_AT,
        )
        for r in signed:
            if attest.is_version_approval(
                keys[r["signing_id"]], r["signature"], bpf, version, content_hash, r["report_hash"]
            ):
                return None
        return (
            f"{bpf} v{version}'s registered content ({content_hash[:19]}…) has no approval"
            f" signed by the conformance body ({self._body})"
        )


async def why_not_operated(
    pool: asyncpg.Pool,
    hub: Ed25519PublicKey,
    bpf: str,
    version: int,
    content_hash: str,
    executor: str,
    *,
    before_signing: bool = False,
) -> str | None:
    """Why ``executor`` has not put ``bpf`` ``version`` of ``content_hash`` into operation by its
    own signature (``None`` when it has): its row in ``registry.operated_by`` signed with a key
    of its that the hub signed into the key registry, current or since replaced, and not revoked
    for cause. ``before_signing`` (content the migration switch lists): an unsigned row from
    before operations were signed (migration 0056 marked them; no one can mark one since) holds
    too."""
    row = await pool.fetchrow(
        "SELECT signing_id, signature, before_signing FROM registry.operated_by"
        " WHERE bpf = $1 AND version = $2 AND executor = $3",
        bpf,
        version,
        executor,
    )
    if row is None:
        return f"{bpf} v{version} is not in operation for {executor}"
    if row["signature"] is None and before_signing and row["before_signing"]:
        return None
    if row["signature"] is None:
        return (
            f"{bpf} v{version} was put into operation for {executor} without its signature"
            " (before operations were signed, or by someone else)"
        )
    public = (await parties.signing_keys(pool, hub, executor)).get(row["signing_id"] or "")
    if public is None or not attest.is_version_operation(
        public, row["signature"], bpf, version, content_hash, executor
    ):
        return (
            f"{bpf} v{version}'s putting into operation for {executor} is not signed by"
            f" {executor} for this content ({content_hash[:19]}…)"
        )
    return None
