"""The hub's side of the permit protocol: sign a permit, seal the provider's code to it.

For every attempt it allows, the hub derives the provider's code for the subject, seals it to
the provider's registered sealing key (so the executor that asked, another agency's worker on the
same queue, or an operator holding the payload ring cannot read it) and signs a permit that binds
the attempt, the parties, the purpose and that sealed code. The provider's gate
(:mod:`activities.gate`) checks all of it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import math
import time
from typing import NamedTuple

import asyncpg

from renkei.contracts.probe import PROBE_TASK
from renkei.kernel import channels, parties, permits
from renkei.kernel import keys as keyfile
from renkei.kernel.records import HUB, RecordSigner
from renkei.kernel.sealing import Sealed, seal
from whitelist.models import WhitelistRow

log = logging.getLogger(__name__)

# A permit outlives its attempt's retries by this much, and never lives past a day.
MARGIN = dt.timedelta(minutes=5)
LONGEST = dt.timedelta(days=1)


def subject_context(workflow_id: str, run_id: str, step: str, provider: str) -> str:
    """What a sealed subject code is for: one attempt's provider (so it cannot be moved)."""
    return f"subject|{workflow_id}|{run_id}|{step}|{provider}"


# How long a read of the key registry may take, and how old the keys read last may grow when
# reads fail before no permit is issued on them.
READ_WAIT = 5.0
KEYS_STALE = 90.0
# A party not found among the keys held is looked for again with a new read of the registry (a
# party registered a moment ago), at most once this often: many linkages naming a party with no
# keys share one read, they do not each make one, and none waits for the next (a party
# registered less than this before its first linkage may be refused once).
MISS_INTERVAL = 1.0


class KeysUnread(RuntimeError):
    """The key registry could not be read for longer than :data:`KEYS_STALE` seconds."""


class UnknownParty(LookupError):
    """An org with no registered keys: nothing can be sealed to it."""


class Issued(NamedTuple):
    """A permit, the provider's code sealed for it, and the provider's signing key (base64)
    from the same read of the registry as the sealing key: its answers verify against it."""

    permit: permits.SignedPermit
    sealed: Sealed | None
    provider_key: str


class PermitIssuer:
    """Signs permits with the hub's key and seals codes to providers' registered keys."""

    def __init__(
        self, pool: asyncpg.Pool, hub: keyfile.Keys, *, kit: bool = False, fields: bool = True
    ) -> None:
        """``kit``: a hub in test mode's (the conformance kit's): each permit it issues says so,
        and a gate in operation refuses it (:attr:`renkei.kernel.permits.Permit.kit`).
        ``fields``: an act's permit names the fields it may send
        (:attr:`renkei.kernel.permits.Permit.fields`); off while a rolling upgrade has parties
        of a release that does not know them (``RENKEI_PERMIT_FIELDS``): such a party reads the
        permit without them, and its signature no longer holds."""
        self._kit = kit
        self._fields = fields
        self._pool = pool
        self._signer = hub.signer()
        self._key_id = keyfile.key_id(keyfile.public_raw(self._signer.public_key()))
        self._verifier = self._signer.public_key()
        self._registry: dict[str, keyfile.PublicKeys] = {}
        self._read_began = -math.inf  # when a read of the registry last began (monotonic)
        self._read_ok = -math.inf  # when the read whose keys are held began
        self._miss_read: asyncio.Future[None] | None = None  # the read for parties not found
        # The hub signs the records it writes, and attests platform starts, with the same key.
        self.key = self._signer
        self.recorder = RecordSigner(HUB, self._signer)
        self.public_b64 = base64.b64encode(keyfile.public_raw(self._verifier)).decode()

    async def _public(self, org: str) -> keyfile.PublicKeys:
        """``org``'s current keys, as the registry said at most ``channels.CURRENT_FOR``
        seconds ago: a provider's key revoked or replaced there gets no code sealed to it in a
        permit issued after that, nor is it given as the key to check the answers of one (a
        party with no key left: :class:`UnknownParty`). A read that fails (the database away)
        keeps the keys read before and is tried again a period later, up to :data:`KEYS_STALE`
        seconds after the last read that succeeded; then :class:`KeysUnread` (the call is
        retried) until one succeeds."""
        now = time.monotonic()
        found = self._registry.get(org)
        if found is None:  # a new or re-keyed org: read again
            await self._read_for_missing(now)
        elif now - self._read_began >= channels.CURRENT_FOR:
            try:
                await self._read()
            except Exception as err:  # the keys read before, until the database is back
                log.warning("the key registry could not be read again (%s)", type(err).__name__)
        if time.monotonic() - self._read_ok > KEYS_STALE:
            raise KeysUnread(
                f"the key registry has not been read for more than {KEYS_STALE:g} s: no permit is"
                " issued on keys that may have been revoked since"
            )
        found = self._registry.get(org)
        if found is None:
            raise UnknownParty(f"{org} has no registered keys: the platform has not issued them")
        return found

    async def _read_for_missing(self, asked: float) -> None:
        """A read of the registry for a party not among the keys held: none if one that began
        after ``asked`` succeeded, or if the last one began less than :data:`MISS_INTERVAL`
        seconds ago (the party is answered from it); else one read at a time, shared by every
        call that misses meanwhile. Never a wait of its own: calls naming a party with no keys
        hold no worker's slot longer than a read."""
        if self._read_ok >= asked:
            return
        read = self._miss_read
        if read is None or read.done():
            if time.monotonic() - self._read_began < MISS_INTERVAL:
                return
            read = self._miss_read = asyncio.ensure_future(self._read())
        await asyncio.shield(read)  # a caller cancelled does not cancel the others' read

    async def _read(self) -> None:
        """Read the registry (within :data:`READ_WAIT` seconds); a read that began before the
        one whose keys are held, and ends after it, does not replace them."""
        began = self._read_began = time.monotonic()  # the calls meanwhile wait for this one
        async with asyncio.timeout(READ_WAIT):
            read = await parties.current(self._pool, self._verifier)
        if began >= self._read_ok:
            self._registry, self._read_ok = read, began

    async def signing_key_of(self, org: str) -> str:
        """``org``'s registered public signing key (base64): its answers verify against it."""
        return (await self._public(org)).signing

    async def issue(
        self,
        *,
        workflow_id: str,
        run_id: str,
        step: str,
        requester: str,
        provider: str,
        task: str,
        info: str,
        row: WhitelistRow,
        bpf: str,
        bpf_version: int,
        content_hash: str,
        provider_code: str | None,
        budget: dt.timedelta,
        now: dt.datetime,
        sub_task: str | None = None,
        fields: tuple[str, ...] | None = None,
    ) -> Issued:
        """A signed permit for one attempt, with the provider's code sealed to the provider's
        current sealing key; :class:`UnknownParty` if the provider has none. ``fields``: an
        act's, the fields its definition sends (the request may send no other)."""
        public = await self._public(provider)
        sealed = self._seal_code(public, workflow_id, run_id, step, provider, provider_code)
        permit = permits.Permit(
            workflow_id=workflow_id,
            run_id=run_id,
            step=step,
            requester=requester,
            provider=provider,
            task=task,
            info=info,
            whitelist_row=row.id,
            legal_reference=row.legal_reference,
            bpf=bpf,
            bpf_version=bpf_version,
            content_hash=content_hash,
            subject_seal=permits.seal_digest(sealed),
            issued_at=now,
            expires_at=now + min(budget + MARGIN, LONGEST),
            key_id=self._key_id,
            sub_task=sub_task,
            kit=self._kit,
            fields=fields if self._fields else None,
        )
        return Issued(permits.sign(permit, self._signer), sealed, public.signing)

    def _seal_code(
        self,
        public: keyfile.PublicKeys,
        workflow_id: str,
        run_id: str,
        step: str,
        provider: str,
        code: str | None,
    ) -> Sealed | None:
        """The provider's code for the person sealed to the provider, for this attempt alone."""
        if code is None:
            return None
        return seal(
            public.sealer(),
            public.sealing_id,
            code.encode(),
            subject_context(workflow_id, run_id, step, provider),
        )

    async def issue_probe(
        self,
        *,
        workflow_id: str,
        run_id: str,
        step: str,
        provider: str,
        info: str,
        provider_code: str | None,
        budget: dt.timedelta,
        now: dt.datetime,
        fields: tuple[str, ...] | None = None,
    ) -> Issued:
        """A contract probe's permit (``probe``): no whitelist row, no flow; the provider's gate
        admits it only in a probe run, for a probe subject (:mod:`renkei.contracts.probe`). As
        :meth:`issue`'s, its sealing key and the provider's signing key come from one read."""
        public = await self._public(provider)
        sealed = self._seal_code(public, workflow_id, run_id, step, provider, provider_code or None)
        permit = permits.Permit(
            workflow_id=workflow_id,
            run_id=run_id,
            step=step,
            requester=HUB,
            provider=provider,
            task=PROBE_TASK,
            info=info,
            whitelist_row=PROBE_TASK,
            legal_reference="-",
            bpf=PROBE_TASK,
            bpf_version=1,
            content_hash="-",
            subject_seal=permits.seal_digest(sealed),
            issued_at=now,
            expires_at=now + min(budget + MARGIN, LONGEST),
            key_id=self._key_id,
            probe=True,
            kit=self._kit,
            fields=fields if self._fields else None,
        )
        return Issued(permits.sign(permit, self._signer), sealed, public.signing)
