"""Payloads sealed between two parties: each party reads only what is written to it.

Every payload a renkei process writes to Temporal (workflow and activity inputs and results,
signals, updates, queries, memo, failures, headers) is encrypted for one **channel**: a pair of
parties. The channel key is agreed from the writer's private X25519 sealing key and the other
party's public one (static Diffie-Hellman, then HKDF-SHA256), so exactly the two parties of the
pair can compute it, and no one else: not another agency holding its own keys, not the
platform's operator, not Temporal.

Which pair a payload belongs to follows from Temporal's serialization context:

- a payload of a flow itself (its start, signals, updates, queries, memo, result) belongs to the
  flow's executor, named in the workflow id (:func:`renkei.contracts.names.executor_of`): the
  pair (executor, executor) when the executor writes it, (writer, executor) when another party
  does (the platform's portal or notification path starting or signalling the flow);
- a payload to or from an activity belongs to the executor and the party serving the activity's
  task queue: the hub's queue, or a provider's own queue. A provider's answer is readable by the
  executor who asked and by the provider, never by the hub or a third agency.

The pair and both key ids travel in clear in the payload's metadata (party ids only, nothing
personal); the ciphertext is bound to them. A decoded payload keeps the pair as
``renkei-channel`` in its metadata, so a workflow can tell who wrote its start.

A process holds one or more parties' private keys (a deployed process: its own party only; the
single-process dev stack: every party it runs) and a :class:`Directory` of public keys.
A payload of a channel the process is not part of is not read: like an unencrypted one, it is
replaced by a payload no converter reads, so only that message fails. Nor is a payload of a pair
that may not write where it was found, though the process could open it: a flow's own payloads
come from its executor or the platform, an activity's from the executor and the queue's party
(another agency writing to the executor on their own pair, or answering in place of the hub from
the hub's queue, is not read).

Runs started before channels (payloads under the shared key ring of
:mod:`renkei.kernel.codec`) still decode in a process that holds the ring; an activity worker
answers such a run in the ring too (it remembers, per activity, how the request came), and the
legacy control worker that runs them writes under the ring (``write_ring``) while it reads what
the platform now writes to them (an answer to a month-long wait) in the hub's channels.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from cachetools import LRUCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    EncodingPayloadConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)

from renkei.kernel.codec import ENCODING as RING_ENCODING
from renkei.kernel.codec import UNENCRYPTED, EncryptionCodec
from renkei.kernel.keys import KeyRing, key_id, public_raw

ENCODING = b"binary/renkei-channel"
CHANNEL = "renkei-channel"  # metadata: "<party>,<key id>,<party>,<key id>", parties sorted
WRITER = CHANNEL  # kept on the decoded payload too: the pair it came in
_NONCE = 12
_REMEMBERED = 4096  # activities whose request came under the ring (their answer goes back so)
_CONTEXTS_KEPT = 1024  # converters in context a data converter keeps (then it starts afresh)
# Seconds between two reads of the registry for a key anyone can name (``patient=False``): a
# payload names its keys in clear, so anyone who can send one (a provider's direct endpoint
# takes them from the network) could otherwise make each read the whole registry and check the
# hub's signature on every row.
RELOAD_INTERVAL = 1.0
# Seconds a writer seals to the keys the registry named at its last read: a key revoked or
# replaced since is sealed to no longer than this (the next write after reads it again).
CURRENT_FOR = 30.0


_log = logging.getLogger(__name__)


class ChannelError(Exception):
    """A payload cannot be written: no key for a party of its channel."""


class Directory:
    """Parties' public sealing keys: by party (current) and by key id (current or former).

    Filled from local key files, the hub-signed registry, or both; ``refresh`` (if given) is
    awaited on a miss, so a party registered after the process started is found: misses share
    one read begun after them (one read at a time), and a lookup that is not ``patient`` reads
    only if the last read began :data:`RELOAD_INTERVAL` seconds ago or more. The key to seal to
    (:meth:`current`) is read again once the last read is :data:`CURRENT_FOR` seconds old.
    """

    def __init__(
        self,
        keys: Mapping[str, X25519PublicKey] | None = None,
        *,
        refresh: Callable[[], Awaitable[Mapping[str, Iterable[X25519PublicKey | None]]]]
        | None = None,
    ) -> None:
        self._current: dict[str, X25519PublicKey] = {}
        self._by_id: dict[str, tuple[str, X25519PublicKey]] = {}
        self._refresh = refresh
        self._reading = asyncio.Lock()
        self._read_began = -math.inf
        for party, key in (keys or {}).items():
            self.add(party, key)

    def add(self, party: str, key: X25519PublicKey, *, current: bool = True) -> None:
        if current:
            self._current[party] = key
        self._by_id[key_id(public_raw(key))] = (party, key)

    def set_refresh(
        self, refresh: Callable[[], Awaitable[Mapping[str, Iterable[X25519PublicKey | None]]]]
    ) -> None:
        self._refresh = refresh

    async def _reload(self, *, patient: bool = True) -> None:
        if self._refresh is None:
            return
        missed = time.monotonic()
        if not patient and missed - self._read_began < RELOAD_INTERVAL:
            return
        async with self._reading:
            if self._read_began >= missed:
                return  # a read begun after this miss has just ended: it found what there is
            if not patient and time.monotonic() - self._read_began < RELOAD_INTERVAL:
                return
            self._read_began = time.monotonic()
            for party, found in (await self._refresh()).items():
                listed = list(found)
                if listed and listed[0] is None:  # every key of the party's is revoked
                    self._current.pop(party, None)
                for i, key in enumerate(listed):  # the first key is the party's current one
                    if key is not None:
                        self.add(party, key, current=i == 0)

    async def current(self, party: str) -> X25519PublicKey:
        """The key to seal to ``party`` now. With a registry to read, what it says is at most
        :data:`CURRENT_FOR` seconds old: a key revoked (or replaced) there is not sealed to
        longer than that, and a party whose every key is revoked gets nothing sealed to it."""
        if party not in self._current:
            await self._reload()
        elif self._refresh is not None and time.monotonic() - self._read_began >= CURRENT_FOR:
            try:
                await self._reload()
            except Exception as err:  # the database away: the keys read before, until it is back
                _log.warning("the key registry could not be read again (%s)", type(err).__name__)
        if party not in self._current:
            raise ChannelError(f"no public sealing key is registered for {party}")
        return self._current[party]

    async def by_id(self, kid: str, *, patient: bool = True) -> tuple[str, X25519PublicKey] | None:
        """The party and public key of key id ``kid``. Not ``patient``: for a key anyone can
        name (a request from the network), no waiting for the next read: if the registry was
        read less than :data:`RELOAD_INTERVAL` seconds ago, a key not found then is not found."""
        if kid not in self._by_id:
            await self._reload(patient=patient)
        return self._by_id.get(kid)


@dataclass
class Identity:
    """The parties whose private sealing keys a process holds (current and former keys)."""

    keys: dict[str, list[X25519PrivateKey]] = field(default_factory=dict)

    def add(self, party: str, *private: X25519PrivateKey) -> Identity:
        self.keys.setdefault(party, []).extend(private)
        return self

    @property
    def parties(self) -> list[str]:
        return list(self.keys)

    def current(self, party: str) -> X25519PrivateKey:
        return self.keys[party][0]

    def by_id(self, party: str, kid: str) -> X25519PrivateKey | None:
        for k in self.keys.get(party, []):
            if key_id(public_raw(k.public_key())) == kid:
                return k
        return None


@dataclass(frozen=True)
class Routing:
    """How the codec reads Temporal's addresses: the executor a workflow id names, and the
    party a task queue belongs to (see :mod:`renkei.contracts.names`)."""

    executor_of: Callable[[str], str | None]
    party_of_queue: Callable[[str], str | None]
    platform: str = "hub"  # the party that may also write a flow's own payloads


@dataclass
class _Shared:
    """What every context copy of one codec shares."""

    identity: Identity
    directory: Directory
    routing: Routing
    ring: EncryptionCodec | None
    primary: str
    ciphers: dict[str, AESGCM] = field(default_factory=dict)
    # (writer, reader) -> (the writer's private key, the reader's public key, channel, cipher):
    # what a write on the pair last used, taken again while both keys are still the current
    # ones (a private key's public half is a scalar multiplication to compute, every time).
    pairs: dict[tuple[str, str], tuple[object, object, str, AESGCM]] = field(default_factory=dict)
    # (workflow id, activity id) of activity requests that came under the ring
    ring_requests: LRUCache[tuple[str, str], None] = field(
        default_factory=lambda: LRUCache(_REMEMBERED)
    )


_TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def is_trace_carrier(payload: Payload) -> bool:
    """A payload that is only a W3C trace context (the tracing header a flow carries from its
    start to each activity): written and read in clear, since its recipient is not known where
    Temporal encodes headers (no serialization context there). It holds trace ids only."""
    if (
        len(payload.data) > 2048
        or b"traceparent" not in payload.data
        or payload.metadata.get("encoding") != b"json/plain"
    ):
        return False
    try:
        carrier = json.loads(payload.data)
    except ValueError:
        return False
    return (
        isinstance(carrier, dict)
        and set(carrier) <= _TRACE_KEYS
        and all(isinstance(v, str) and len(v) <= 512 for v in carrier.values())
    )


def _derive(secret: bytes, channel: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"renkei/channel/v1|" + channel.encode(),
    ).derive(secret)
    return AESGCM(key)


class ChannelCodec(PayloadCodec, WithSerializationContext):
    """The payload codec of a renkei process: see the module's docstring."""

    def __init__(
        self,
        identity: Identity,
        directory: Directory,
        routing: Routing,
        *,
        primary: str | None = None,
        ring: KeyRing | None = None,
        write_ring: bool = False,
        accept_plaintext: bool = False,
    ) -> None:
        if not identity.parties:
            raise ValueError("a channel codec needs the private keys of at least one party")
        self._shared = _Shared(
            identity=identity,
            directory=directory,
            routing=routing,
            ring=EncryptionCodec(ring, accept_plaintext=accept_plaintext) if ring else None,
            primary=primary or identity.parties[0],
        )
        if write_ring and ring is None:
            raise ValueError("writing under the ring needs the ring")
        self._write_ring = write_ring
        self._accept_plaintext = accept_plaintext
        self._context: SerializationContext | None = None

    @property
    def parties(self) -> list[str]:
        """The parties this codec holds private keys of."""
        return self._shared.identity.parties

    @property
    def directory(self) -> Directory:
        return self._shared.directory

    def with_context(self, context: SerializationContext) -> Self:
        copy = object.__new__(type(self))
        copy._shared = self._shared
        copy._accept_plaintext = self._accept_plaintext
        copy._write_ring = self._write_ring
        copy._context = context
        return copy

    # -- which pair ---------------------------------------------------------------------------

    def _pair(self) -> tuple[str, str]:
        """(writer, reader): the writer is a party this process holds."""
        own = self._shared.identity.keys
        route = self._shared.routing
        ctx = self._context
        wid = getattr(ctx, "workflow_id", None)
        executor = route.executor_of(wid) if wid else None
        if isinstance(ctx, ActivitySerializationContext) and executor is not None:
            other = route.party_of_queue(ctx.activity_task_queue or "") or executor
            if executor in own:
                return executor, other
            if other in own:
                return other, executor
            raise ChannelError(
                f"this process holds neither {executor}'s nor {other}'s keys for this activity"
            )
        if executor is not None:
            if executor in own:
                return executor, executor
            writer = self._shared.primary
            return writer, executor
        return self._shared.primary, self._shared.primary

    async def _cipher(self, writer: str, reader: str) -> tuple[str, AESGCM]:
        shared = self._shared
        mine = shared.identity.current(writer)
        current = None if reader == writer else await shared.directory.current(reader)
        last = shared.pairs.get((writer, reader))
        if last is not None and last[0] is mine and last[1] is current:
            return last[2], last[3]
        theirs = mine.public_key() if current is None else current
        a = (writer, key_id(public_raw(mine.public_key())))
        b = (reader, key_id(public_raw(theirs)))
        first, second = sorted((a, b))
        channel = f"{first[0]},{first[1]},{second[0]},{second[1]}"
        cipher = shared.ciphers.get(channel)
        if cipher is None:
            cipher = shared.ciphers[channel] = _derive(mine.exchange(theirs), channel)
        shared.pairs[(writer, reader)] = (mine, current, channel, cipher)
        return channel, cipher

    async def _open_cipher(self, channel: str) -> AESGCM | None:
        shared = self._shared
        cipher = shared.ciphers.get(channel)
        if cipher is not None:
            return cipher
        try:
            p1, k1, p2, k2 = channel.split(",")
        except ValueError:
            return None
        for (mine_p, mine_k), (other_p, other_k) in (((p1, k1), (p2, k2)), ((p2, k2), (p1, k1))):
            private = shared.identity.by_id(mine_p, mine_k)
            if private is None:
                continue
            if (other_p, other_k) == (mine_p, mine_k):
                public = private.public_key()
            else:
                found = await shared.directory.by_id(other_k)
                if found is None or found[0] != other_p:
                    return None
                public = found[1]
            cipher = shared.ciphers[channel] = _derive(private.exchange(public), channel)
            return cipher
        return None

    # -- encode / decode ----------------------------------------------------------------------

    def _expected(self) -> tuple[frozenset[str], ...] | None:
        """The pairs a payload in this context may come in (None: any the process can open).

        A flow's own payloads are written by its executor, or by the platform to it; a
        payload to or from an activity, by the executor and the party serving the activity's
        queue. A payload in any other pair a process can open (another party writing to this
        executor on their own pair, say a rogue worker on the hub's queue answering in place of
        the hub) is not read."""
        ctx = self._context
        route = self._shared.routing
        wid = getattr(ctx, "workflow_id", None)
        executor = route.executor_of(wid) if wid else None
        if executor is None:
            return None
        if isinstance(ctx, ActivitySerializationContext):
            other = route.party_of_queue(ctx.activity_task_queue or "") or executor
            return (frozenset({executor, other}),)
        return frozenset({executor}), frozenset({executor, route.platform})

    def _activity_key(self) -> tuple[str, str] | None:
        ctx = self._context
        if isinstance(ctx, ActivitySerializationContext) and ctx.workflow_id and ctx.activity_id:
            return ctx.workflow_id, ctx.activity_id
        return None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        shared = self._shared
        key = self._activity_key()
        if shared.ring is not None and (
            self._write_ring or (key is not None and key in shared.ring_requests)
        ):
            # The legacy control worker, or the answer to a request from a run started before
            # channels: written as such runs' workers read.
            return await shared.ring.encode(payloads)
        if all(is_trace_carrier(p) for p in payloads):
            return list(payloads)
        writer, reader = self._pair()
        channel, cipher = await self._cipher(writer, reader)
        aad = b"renkei/channel/v1|" + channel.encode()
        out = []
        for p in payloads:
            nonce = os.urandom(_NONCE)
            sealed = cipher.encrypt(nonce, p.SerializeToString(), aad)
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, CHANNEL: channel.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._decode_one(p) for p in payloads]

    async def _decode_one(self, payload: Payload) -> Payload:
        shared = self._shared
        encoding = payload.metadata.get("encoding")
        if encoding == RING_ENCODING and shared.ring is not None:
            key = self._activity_key()
            if key is not None:
                shared.ring_requests[key] = None
            return shared.ring.decrypt(payload)
        if encoding != ENCODING:
            if self._accept_plaintext or is_trace_carrier(payload):
                return payload
            return Payload(metadata={"encoding": UNENCRYPTED})
        channel = payload.metadata.get(CHANNEL, b"").decode()
        expected = self._expected()
        if expected is not None and frozenset(channel.split(",")[0::2]) not in expected:
            return Payload(metadata={"encoding": UNENCRYPTED})  # not a pair that may write here
        cipher = await self._open_cipher(channel)
        if cipher is None:  # not a channel this process is part of: not read
            return Payload(metadata={"encoding": UNENCRYPTED})
        aad = b"renkei/channel/v1|" + channel.encode()
        try:
            clear = cipher.decrypt(payload.data[:_NONCE], payload.data[_NONCE:], aad)
        except (InvalidTag, ValueError):
            return Payload(metadata={"encoding": UNENCRYPTED})
        out = Payload()
        out.ParseFromString(clear)
        out.metadata[WRITER] = channel.encode()
        return out


@dataclass(frozen=True)
class _ChannelConverter(DataConverter):
    """A data converter whose :meth:`with_context` costs a copy, not a new converter.

    The SDK gives each command's payloads a converter for their context (the channel codec
    needs it: which pair seals them). ``DataConverter.with_context`` builds it with
    ``dataclasses.replace``, whose ``__post_init__`` constructs a new pydantic payload converter
    and failure converter, then throws them away for the context's own: about 2 % of a busy
    worker's CPU. Here the components are put in context as there, on a shallow copy."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # Converters already put in a context, by context: the SDK asks for the same one many
        # times over (each of its passes over an activation asks again for every command). A
        # converter in context depends on the context only, so its clones share this.
        object.__setattr__(self, "_in_context", {})

    def with_context(self, context: SerializationContext) -> Self:
        known: dict[SerializationContext, Self] = self.__dict__["_in_context"]
        found = known.get(context)
        if found is not None:
            return found
        parts = {
            name: getattr(self, name)
            for name in (
                "payload_converter",
                "payload_codec",
                "failure_converter",
                "external_storage",
            )
        }
        changed = {
            name: part.with_context(context)
            for name, part in parts.items()
            if isinstance(part, WithSerializationContext)
        }
        if all(changed[name] is parts[name] for name in changed):
            return self
        cloned = object.__new__(type(self))  # a shallow copy (copy.copy goes by pickling's way)
        cloned.__dict__.update(self.__dict__)
        for name, part in changed.items():
            object.__setattr__(cloned, name, part)
        if len(known) >= _CONTEXTS_KEPT:
            known.clear()
        known[context] = cloned
        return cloned


class _PydanticPayloads(PydanticPayloadConverter):
    """Temporal's pydantic payload converter, whose encoding converters are built once per
    process and shared by every instance.

    The SDK builds a data converter twice for every workflow activation (to decode it and to
    encode its completion: ``_CommandAwareDataConverter.create``), and a data converter builds
    a payload converter of its class as it is made, which the activation then never uses (its
    payloads go through the converter in the command's context). Building Temporal's pydantic
    converter afresh each time was about 8 % of a control worker's activation time. The
    encoding converters hold no state but the JSON converter's cache of pydantic type adapters,
    which one converter already shares among all the activations of a worker."""

    _shared: tuple[EncodingPayloadConverter, ...] | None = None

    def __init__(self) -> None:
        shared = type(self)._shared
        if shared is None:
            super().__init__()
            type(self)._shared = tuple(self.converters.values())
        else:
            self._set_converters(*shared)


def channel_converter(codec: ChannelCodec) -> DataConverter:
    """The data converter of a renkei process: pydantic payloads, sealed between parties,
    failures' messages and traces encoded too."""
    return _ChannelConverter(
        payload_converter_class=_PydanticPayloads,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def channel_parties(payload: Payload) -> tuple[str, str] | None:
    """The two parties of the channel a decoded payload came in (``None``: before channels)."""
    raw = payload.metadata.get(WRITER)
    if not raw:
        return None
    parts = raw.decode().split(",")
    return (parts[0], parts[2]) if len(parts) == 4 else None
