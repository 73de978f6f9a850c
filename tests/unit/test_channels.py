"""Payloads sealed between two parties: who can read what (no servers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    WorkflowSerializationContext,
)

from renkei.contracts.names import (
    HUB,
    agency_queue,
    control_parts,
    control_queue,
    executor_of,
    hub_queue,
    party_of_queue,
    scan_workflow_id,
    workflow_id,
)
from renkei.kernel import channels
from renkei.kernel.channels import (
    ChannelCodec,
    Directory,
    Identity,
    channel_parties,
)
from renkei.kernel.codec import UNENCRYPTED, EncryptionCodec
from renkei.kernel.keys import KeyRing
from workers.plugin import ROUTING

PARTIES = ("hub", "city-minato", "city-shibuya", "jps")
PRIVATE = {p: X25519PrivateKey.generate() for p in PARTIES}
RING = KeyRing(active="k1", keys={"k1": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="})
WID = workflow_id("child-allowance-check", "city-minato", "case-1")


def codec(party: str, ring: KeyRing | None = None) -> ChannelCodec:
    directory = Directory({p: k.public_key() for p, k in PRIVATE.items()})
    return ChannelCodec(Identity().add(party, PRIVATE[party]), directory, ROUTING, ring=ring)


def flow(c: ChannelCodec, wid: str = WID) -> ChannelCodec:
    return c.with_context(WorkflowSerializationContext(namespace="default", workflow_id=wid))


def activity(c: ChannelCodec, queue: str, wid: str = WID, aid: str = "1") -> ChannelCodec:
    return c.with_context(
        ActivitySerializationContext(
            namespace="default",
            activity_id=aid,
            activity_type="query.pension",
            activity_task_queue=queue,
            workflow_id=wid,
            workflow_type="child-allowance-check",
            is_local=False,
        )
    )


SECRET = Payload(metadata={"encoding": b"json/plain"}, data=b'{"income": 4200000}')


async def read(c: ChannelCodec, p: Payload) -> Payload:
    [out] = await c.decode([p])
    return out


def unread(p: Payload) -> bool:
    return p.metadata.get("encoding") == UNENCRYPTED


async def test_a_flows_own_payloads_are_the_executors_alone() -> None:
    [sealed] = await flow(codec("city-minato")).encode([SECRET])
    assert SECRET.data not in sealed.data
    assert (await read(codec("city-minato"), sealed)).data == SECRET.data
    for other in ("hub", "city-shibuya", "jps"):
        assert unread(await read(codec(other), sealed)), other


async def test_a_linkage_is_readable_by_the_executor_and_the_provider_only() -> None:
    queue = agency_queue("renkei", "jps")
    [request] = await activity(codec("city-minato"), queue).encode([SECRET])
    assert (await read(codec("jps"), request)).data == SECRET.data
    [answer] = await activity(codec("jps"), queue).encode([SECRET])
    assert (await read(codec("city-minato"), answer)).data == SECRET.data
    for other in ("hub", "city-shibuya"):  # the hub brokers, it does not read the content
        assert unread(await read(codec(other), request))
        assert unread(await read(codec(other), answer))


async def test_what_a_flow_sends_the_hub_is_between_the_executor_and_the_hub() -> None:
    [sealed] = await activity(codec("city-minato"), hub_queue("renkei")).encode([SECRET])
    assert (await read(codec("hub"), sealed)).data == SECRET.data
    assert unread(await read(codec("jps"), sealed))


async def test_the_platform_writes_to_an_executor_and_the_flow_knows_who_wrote() -> None:
    [start] = await flow(codec("hub")).encode([SECRET])
    opened = await read(codec("city-minato"), start)
    assert opened.data == SECRET.data
    assert set(channel_parties(opened) or ()) == {HUB, "city-minato"}
    [own] = await flow(codec("city-minato")).encode([SECRET])
    assert channel_parties(await read(codec("city-minato"), own)) == ("city-minato",) * 2


async def test_a_third_agency_cannot_write_as_the_executor() -> None:
    """city-shibuya writes a start to city-minato's flow: city-minato reads it, and sees that
    city-shibuya wrote it (the interpreter refuses such a start)."""
    [forged] = await flow(codec("city-shibuya")).encode([SECRET])
    opened = await read(codec("city-minato"), forged)
    assert set(channel_parties(opened) or ()) == {"city-shibuya", "city-minato"}


async def test_a_tampered_channel_or_ciphertext_is_not_read() -> None:
    [sealed] = await flow(codec("city-minato")).encode([SECRET])
    moved = Payload()
    moved.CopyFrom(sealed)
    moved.metadata["renkei-channel"] = sealed.metadata["renkei-channel"].replace(
        b"city-minato", b"city-shibuya", 1
    )
    assert unread(await read(codec("city-shibuya"), moved))
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    assert unread(await read(codec("city-minato"), flipped))


async def test_plaintext_is_not_read() -> None:
    assert unread(await read(codec("jps"), SECRET))


async def test_a_run_from_before_channels_is_answered_under_the_ring() -> None:
    """A provider reads a request written under the shared ring (a run in flight from before)
    and answers that activity under the ring too, so the old run's worker reads it."""
    legacy = EncryptionCodec(RING)
    queue = agency_queue("renkei", "jps")
    [request] = await legacy.encode([SECRET])
    jps = codec("jps", ring=RING)
    assert (await read(activity(jps, queue, aid="old"), request)).data == SECRET.data
    [answer] = await activity(jps, queue, aid="old").encode([SECRET])
    assert (await legacy.decode([answer]))[0].data == SECRET.data
    [fresh] = await activity(jps, queue, aid="new").encode([SECRET])
    assert fresh.metadata["encoding"] == b"binary/renkei-channel"


async def test_a_rotated_key_still_opens_what_was_written_to_it() -> None:
    old = PRIVATE["city-minato"]
    [sealed] = await flow(codec("city-minato")).encode([SECRET])
    new = X25519PrivateKey.generate()
    directory = Directory({p: k.public_key() for p, k in PRIVATE.items()})
    rotated = ChannelCodec(Identity().add("city-minato", new, old), directory, ROUTING)
    assert (await read(rotated, sealed)).data == SECRET.data


async def test_a_write_after_either_key_changes_goes_in_the_new_channel() -> None:
    """A codec reuses what it worked out for a pair while both keys stay current: the reader
    registering a new key, or the writer taking one, moves the next write to the new channel,
    which the new key opens and the old one does not."""
    queue = agency_queue("", "jps")
    writer = codec("city-minato")
    [before] = await activity(writer, queue).encode([SECRET])
    [again] = await activity(writer, queue, aid="2").encode([SECRET])
    assert again.metadata[channels.CHANNEL] == before.metadata[channels.CHANNEL]
    jps_new = X25519PrivateKey.generate()
    writer.directory.add("jps", jps_new.public_key())
    [after] = await activity(writer, queue, aid="3").encode([SECRET])
    assert after.metadata[channels.CHANNEL] != before.metadata[channels.CHANNEL]
    directory = Directory({p: k.public_key() for p, k in PRIVATE.items()})
    directory.add("jps", jps_new.public_key())
    jps_now = ChannelCodec(Identity().add("jps", jps_new), directory, ROUTING)
    assert (await read(activity(jps_now, queue), after)).data == SECRET.data
    assert unread(await read(activity(codec("jps"), queue), after))
    minato_new = X25519PrivateKey.generate()
    writer._shared.identity.keys["city-minato"].insert(0, minato_new)  # its new current key
    [taken] = await activity(writer, queue, aid="4").encode([SECRET])
    assert taken.metadata[channels.CHANNEL] not in (
        after.metadata[channels.CHANNEL],
        before.metadata[channels.CHANNEL],
    )


def test_addresses_name_their_party() -> None:
    assert executor_of(WID) == "city-minato"
    assert executor_of(scan_workflow_id("b", "city-shibuya", "18-birthday") + "-2026") == (
        "city-shibuya"
    )
    assert executor_of("attacker-1") is None
    assert party_of_queue(hub_queue("t.x")) == HUB
    assert party_of_queue(agency_queue("t.x", "jps")) == "jps"
    assert party_of_queue(control_queue("t.x", "city-minato")) == "city-minato"
    assert control_parts(control_queue("t.x", "jps")) == ("t.x", "jps")
    assert control_parts(control_queue("t.x")) == ("t.x", None)


async def test_a_trace_context_travels_in_clear_and_nothing_else_does() -> None:
    carrier = Payload(
        metadata={"encoding": b"json/plain"},
        data=b'{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
    )
    [out] = await codec("hub").encode([carrier])  # a header: no serialization context
    assert out == carrier
    assert (await read(codec("city-minato"), carrier)).data == carrier.data
    smuggled = Payload(
        metadata={"encoding": b"json/plain"},
        data=b'{"traceparent":"x","subject":"ABCDEFGHIJKLMNOPQRST"}',
    )
    assert unread(await read(codec("city-minato"), smuggled))
    [sealed] = await codec("hub").encode([smuggled])
    assert sealed.metadata["encoding"] == b"binary/renkei-channel"


async def test_a_pair_that_may_not_write_here_is_not_read_though_it_opens() -> None:
    """city-shibuya, holding its own keys only, writes to city-minato on their own pair: a
    signal or a result of city-minato's flow, or an answer in place of the hub or of jps. The
    executor could open it (it is a party of the pair), but that pair may not write there."""
    rogue = codec("city-shibuya")
    minato = codec("city-minato")
    # A flow's own payloads: only the executor's, or the platform's to it.
    [forged] = await flow(rogue).encode([SECRET])
    assert channel_parties(await read(codec("city-shibuya"), forged)) is not None  # it opens
    assert unread(await read(flow(minato), forged))
    [platform] = await flow(codec("hub")).encode([SECRET])
    assert (await read(flow(minato), platform)).data == SECRET.data
    # An activity's: only the executor's and the queue's party's.
    for queue in (hub_queue("renkei"), agency_queue("renkei", "jps")):
        # The rogue polls that queue and answers on its own pair with the executor.
        [answer] = await activity(rogue, agency_queue("renkei", "city-shibuya")).encode([SECRET])
        assert unread(await read(activity(minato, queue), answer)), queue
    [real] = await activity(codec("jps"), agency_queue("renkei", "jps")).encode([SECRET])
    assert (await read(activity(minato, agency_queue("renkei", "jps")), real)).data == SECRET.data


async def test_misses_share_one_registry_read_and_a_party_registered_later_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys looked up that no one has read the registry once for all that missed together,
    not once each; a key anyone can name (``patient=False``) reads it only if the last read is
    RELOAD_INTERVAL old; a party registered just after a read is still found by the next miss."""
    monkeypatch.setattr(channels, "RELOAD_INTERVAL", 3600.0)
    registered: dict[str, list[X25519PublicKey]] = {}
    reads = 0

    async def refresh() -> dict[str, list[X25519PublicKey]]:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0)
        return dict(registered)

    directory = Directory(refresh=refresh)
    found = await asyncio.gather(*(directory.by_id(f"kid-{i}") for i in range(50)))
    assert found == [None] * 50
    assert reads <= 2  # the first miss's read, and one for those that missed during it
    before = reads
    named = await asyncio.gather(*(directory.by_id(f"n-{i}", patient=False) for i in range(50)))
    assert named == [None] * 50
    assert reads == before  # read a moment ago: not again for keys anyone can name
    late = X25519PrivateKey.generate().public_key()
    registered["city-late"] = [late]
    assert await directory.current("city-late") == late


async def test_the_converter_in_a_context_seals_in_that_contexts_pair_and_builds_no_converter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A converter put in an activity's context seals for that activity's pair (the executor and
    the provider) with the same payload converter, without constructing a new one per call."""
    converter = channels.channel_converter(codec("city-minato"))
    built: list[object] = []
    original = PydanticPayloadConverter.__init__

    def counted(self: PydanticPayloadConverter, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PydanticPayloadConverter, "__init__", counted)
    queue = agency_queue("renkei", "jps")
    ctx = ActivitySerializationContext(
        namespace="default",
        activity_id="1",
        activity_type="query.pension",
        activity_task_queue=queue,
        workflow_id=WID,
        workflow_type="child-allowance-check",
        is_local=False,
    )
    in_context = converter.with_context(ctx)
    assert built == []
    assert in_context is not converter and type(in_context) is type(converter)
    assert in_context.payload_converter is converter.payload_converter
    assert converter.payload_codec is not None and in_context.payload_codec is not None
    assert in_context.payload_codec is not converter.payload_codec
    [request] = await in_context.encode([{"income": 4200000}])
    assert (await read(codec("jps"), request)).data == b'{"income":4200000}'
    assert unread(await read(codec("hub"), request))
    # The converter out of context is unchanged: a flow's own payloads stay the executor's.
    [own] = await converter.with_context(
        WorkflowSerializationContext(namespace="default", workflow_id=WID)
    ).encode([{"income": 4200000}])
    assert unread(await read(codec("jps"), own))


def test_a_data_converter_made_for_each_activation_builds_no_pydantic_converter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK makes two data converters of the process's classes for every workflow activation;
    making them builds none of Temporal's pydantic encoding converters again (they are built
    once, shared), and each still converts on its own."""
    from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter

    converter = channels.channel_converter(codec("city-minato"))
    built: list[object] = []
    original = PydanticJSONPlainPayloadConverter.__init__

    def counted(self: PydanticJSONPlainPayloadConverter, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PydanticJSONPlainPayloadConverter, "__init__", counted)
    made = [
        DataConverter(
            payload_converter_class=converter.payload_converter_class,
            payload_codec=converter.payload_codec,
            failure_converter_class=converter.failure_converter_class,
        )
        for _ in range(5)
    ]
    assert built == []
    [payload] = made[0].payload_converter.to_payloads([{"income": 4200000}])
    assert payload.data == b'{"income":4200000}'
    assert made[1].payload_converter.from_payloads([payload]) == [{"income": 4200000}]
    # Put in a context, a converter gets instances of its own: the shared ones stay as built.
    first = made[2].payload_converter
    assert (
        first.with_context(WorkflowSerializationContext(namespace="default", workflow_id=WID))
        .to_payloads([1])[0]
        .data
        == b"1"
    )
    assert made[3].payload_converter.to_payloads(["x"])[0].data == b'"x"'


def test_a_converter_put_in_a_context_is_kept_for_that_context_and_seals_for_its_pair() -> None:
    """The SDK asks a data converter for the same context many times an activation: the second
    time gets the converter made the first time, another context its own, which seals for its
    own pair; and a converter keeps a bounded number of them."""
    converter = channels.channel_converter(codec("city-minato"))
    in_flow = WorkflowSerializationContext(namespace="default", workflow_id=WID)
    asked = ActivitySerializationContext(
        namespace="default",
        activity_id="1",
        activity_type="query.pension",
        activity_task_queue=agency_queue("", "jps"),
        workflow_id=WID,
        workflow_type="child-allowance-check",
        is_local=False,
    )
    own = converter.with_context(in_flow)
    assert converter.with_context(in_flow) is own
    to_jps = converter.with_context(asked)
    assert to_jps is not own and own.with_context(asked) is to_jps  # a clone asks the same store

    async def pair(c: DataConverter) -> tuple[str, str] | None:
        [sealed] = await c.encode([{"income": 4200000}])
        [opened] = await c.payload_codec.decode([sealed])  # type: ignore[union-attr]
        return channel_parties(opened)

    assert asyncio.run(pair(own)) == ("city-minato", "city-minato")
    assert set(asyncio.run(pair(to_jps)) or ()) == {"city-minato", "jps"}
    for i in range(channels._CONTEXTS_KEPT + 5):
        converter.with_context(
            WorkflowSerializationContext(namespace="default", workflow_id=f"{WID}-{i}")
        )
    assert len(converter.__dict__["_in_context"]) <= channels._CONTEXTS_KEPT


async def test_a_writer_reads_the_registry_again_and_seals_to_no_revoked_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The registry says a party's key was replaced, then that its every key is revoked: a
    writer seals to the new key once what it read is older than CURRENT_FOR (not before: no read
    per write), then to nothing (ChannelError), while what was sealed to the old keys still
    opens for their holder."""
    queue = agency_queue("", "jps")
    old = PRIVATE["jps"].public_key()
    new = X25519PrivateKey.generate()
    registry: dict[str, list[X25519PublicKey | None]] = {"jps": [old]}
    reads: list[int] = []

    async def refresh() -> dict[str, list[X25519PublicKey | None]]:
        reads.append(1)
        return dict(registry)

    writer = codec("city-minato")
    writer.directory.set_refresh(refresh)
    monkeypatch.setattr(channels, "CURRENT_FOR", 3600.0)
    [first] = await activity(writer, queue).encode([SECRET])
    [second] = await activity(writer, queue, aid="2").encode([SECRET])
    assert len(reads) == 1 and first.metadata[channels.CHANNEL] == second.metadata[channels.CHANNEL]
    registry["jps"] = [new.public_key(), old]  # replaced: the old one revoked
    [cached] = await activity(writer, queue, aid="3").encode([SECRET])
    assert len(reads) == 1 and cached.metadata[channels.CHANNEL] == first.metadata[channels.CHANNEL]
    monkeypatch.setattr(channels, "CURRENT_FOR", 0.0)
    [moved] = await activity(writer, queue, aid="4").encode([SECRET])
    assert moved.metadata[channels.CHANNEL] != first.metadata[channels.CHANNEL]
    jps_now = ChannelCodec(Identity().add("jps", new, PRIVATE["jps"]), writer.directory, ROUTING)
    assert (await read(activity(jps_now, queue), moved)).data == SECRET.data
    assert (await read(activity(jps_now, queue), first)).data == SECRET.data
    registry["jps"] = [None, new.public_key(), old]  # every key of jps's revoked
    with pytest.raises(channels.ChannelError, match="no public sealing key"):
        await activity(writer, queue, aid="5").encode([SECRET])
    assert (await read(activity(jps_now, queue), moved)).data == SECRET.data


async def test_a_writer_whose_registry_read_fails_keeps_the_keys_it_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database away when a writer reads the registry again: it goes on sealing to the keys
    it read before (the outage stalls no flow), and tries again CURRENT_FOR seconds later, not
    at every write."""
    queue = agency_queue("", "jps")
    calls: list[int] = []

    async def refresh() -> dict[str, list[X25519PublicKey | None]]:
        calls.append(1)
        if len(calls) > 1:
            raise OSError("connection refused")
        return {"jps": [PRIVATE["jps"].public_key()]}

    writer = codec("city-minato")
    writer.directory.set_refresh(refresh)
    monkeypatch.setattr(channels, "CURRENT_FOR", 3600.0)
    [first] = await activity(writer, queue).encode([SECRET])
    monkeypatch.setattr(channels, "CURRENT_FOR", 0.0)
    [during] = await activity(writer, queue, aid="2").encode([SECRET])
    assert during.metadata[channels.CHANNEL] == first.metadata[channels.CHANNEL]
    assert len(calls) == 2
    monkeypatch.setattr(channels, "CURRENT_FOR", 3600.0)
    await activity(writer, queue, aid="3").encode([SECRET])
    assert len(calls) == 2
