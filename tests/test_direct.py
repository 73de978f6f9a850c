"""The direct channel (``RENKEI_LINKAGE_TRANSPORT=direct``, :mod:`activities.direct`): the
executor's worker asks each provider's endpoint itself, from a local activity of the flow, and
every guarantee of a linkage through the provider's queue holds the same.

The attacker tests play a third agency and a process with no keys at all against a provider's
endpoint, and an executor replaying its own request: nothing is answered that the hub did not
permit for that very attempt, and every attempt has exactly one record per party.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.agencies import SAMPLE_AGENCIES, providers_for
from activities.attempts import attempt_key
from activities.direct import (
    METHOD,
    DirectServer,
    Served,
    _sealing,
    envelope_of,
    open_request,
    opened_reply,
    sealed_request,
)
from activities.gate import WhitelistGate
from renkei.app.client import RenkeiClient
from renkei.contracts.messages import DirectLinkage
from renkei.contracts.names import DIRECT_LINKAGE, HUB, control_queue
from renkei.kernel import keys, records
from renkei.kernel.channels import CHANNEL, ENCODING, ChannelCodec, ChannelError
from renkei.kernel.settings import Settings
from whitelist.store import LiveWhitelist
from workers.plugin import attach_registry, party_client

from .helpers import (
    all_chained,
    child_rearing,
    code,
    flow_outcomes,
    households,
    pick,
    register_fixture,
    start,
    workers,
)


@pytest.fixture
def direct_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"linkage_transport": "direct"})


@pytest_asyncio.fixture
async def direct_env(
    client: Client,
    pool: asyncpg.Pool,
    direct_settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
) -> AsyncIterator[RenkeiClient]:
    async with workers(client, pool, direct_settings, catalog, live_whitelist):
        yield RenkeiClient(client, direct_settings)


async def test_a_flow_asks_its_providers_directly(direct_env, pool, direct_settings) -> None:
    settings = direct_settings
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    head, spouse = h.members[0], h.members[1]
    handle = await direct_env.start(child_rearing(settings, head, spouse))
    result = await handle.result()
    assert result.outcome == "completed"
    assert result.result["counted_income"] == head.taxable_income + spouse.taxable_income
    # No linkage crossed to a provider's queue: each is a local activity's marker.
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert all(name.startswith("hub.") for name in scheduled), scheduled
    # Exactly one record per party per attempt, each under its own code.
    for keeper in ("city-minato", "pref-tokyo", records.HUB):
        recs = await records.query(pool, workflow_id=handle.id, keeper=keeper)
        assert sorted(r.step for r in recs) == ["household", "own_income", "spouse_income"]
    provider = await records.query(pool, workflow_id=handle.id, keeper="city-minato")
    assert {r.subject_code for r in provider if r.step != "spouse_income"} == {
        code(settings, "city-minato", head)
    }
    # The hub collects "provided" from the provider's own receipts, as through its queue.
    assert set((await flow_outcomes(pool, handle.id)).values()) == {"provided"}


# -- attackers at a provider's endpoint ----------------------------------------------------------


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[DirectServer, bytes]]:
    """Every envelope an endpoint of this test receives, with the endpoint."""
    seen: list[tuple[DirectServer, bytes]] = []
    original = DirectServer.answer

    async def answer(self: DirectServer, body: bytes) -> bytes:
        seen.append((self, body))
        return await original(self, body)

    monkeypatch.setattr(DirectServer, "answer", answer)
    return seen


def _linkages(
    asked: list[tuple[DirectServer, bytes]],
) -> list[tuple[DirectServer, bytes]]:
    """The envelopes of linkages among those asked (not a run's to the hub's endpoint)."""
    return [(s, b) for s, b in asked if envelope_of(b)[0] != HUB]


async def _send(address: str, body: bytes) -> bytes:
    """``body`` sent to the endpoint at ``address``, as anyone on the network can."""
    async with grpc.aio.insecure_channel(address) as channel:
        ask: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        return await ask(body, timeout=30)


async def _refused(address: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(address, body)
    return caught.value.code(), caught.value.details() or ""


def _codec(client: Client, pool: asyncpg.Pool, settings: Settings, party: str) -> ChannelCodec:
    """The channel codec of a process holding ``party``'s keys alone."""
    own = party_client(client, settings, [party])
    attach_registry(own, pool, settings)
    codec = own.data_converter.payload_codec
    assert isinstance(codec, ChannelCodec)
    return codec


async def _receipts(pool: asyncpg.Pool, workflow_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT attempt_key FROM records.answer_receipts WHERE strpos(attempt_key, $1) = 1",
        workflow_id,
    )
    return sorted(r["attempt_key"] for r in rows)


def _as_shibuyas(call: DirectLinkage) -> tuple[str, DirectLinkage]:
    """A real request (its permit, its sealed subject) re-addressed by city-shibuya, which got
    hold of it, to a flow of its own: (that flow's id, the request as it asks it)."""
    own_flow = f"child-rearing-allowance-income-check/city-shibuya/case-{uuid.uuid4().hex[:8]}"
    theirs = call.model_copy(
        update={
            "workflow_id": own_flow,
            "request": call.request.model_copy(update={"requester": "city-shibuya"}),
        }
    )
    return own_flow, theirs


async def _ran(
    direct_env: RenkeiClient,
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    asked: list[tuple[DirectServer, bytes]],
) -> tuple[str, DirectServer, bytes, DirectLinkage]:
    """A real flow of pref-tokyo's, run to the end over the direct channel: its id, the
    endpoint that served it, and its first request as sent and as opened with the executor's
    keys (what an attacker who stole them, or the envelope, would hold)."""
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    handle = await direct_env.start(child_rearing(settings, h.members[0], h.members[1]))
    assert (await handle.result()).outcome == "completed"
    server, body = next((s, b) for s, b in _linkages(asked) if handle.id.encode() in b)
    provider, workflow_id, sealed = envelope_of(body)
    tokyo = _codec(client, pool, settings, "pref-tokyo")
    call = await open_request(tokyo, settings.task_queue_prefix, provider, workflow_id, sealed)
    # The provider's records linked in its chain (deferred chaining, the default): the tests
    # compare them whole, their places too, before and after an attack.
    await all_chained(pool, ["city-minato"])
    return handle.id, server, body, call


async def test_a_request_sent_again_is_answered_with_one_record_and_one_receipt(
    direct_env, client, pool, direct_settings, asked
) -> None:
    """The executor's worker sends an attempt again when its task did not complete (a crash
    after the answer): the provider answers again, and keeps one record and one receipt."""
    settings = direct_settings
    flow, server, body, call = await _ran(direct_env, client, pool, settings, asked)
    kept = await records.query(pool, workflow_id=flow, keeper="city-minato")
    receipts = await _receipts(pool, flow)
    assert len(kept) == len(receipts) == 3
    tokyo = _codec(client, pool, settings, "pref-tokyo")
    for _ in range(2):  # sealed afresh each time, as the executor's worker does
        again = await sealed_request(tokyo, settings.task_queue_prefix, call)
        assert again != body
        reply = await opened_reply(
            tokyo, settings.task_queue_prefix, call, await _send(server.address, again)
        )
        assert reply is not None and reply.failure is None and reply.answer is not None
    assert await records.query(pool, workflow_id=flow, keeper="city-minato") == kept
    assert await _receipts(pool, flow) == receipts


async def test_one_permit_gets_one_answer_however_often_the_executor_asks(
    direct_env, client, pool, direct_settings, catalog, live_whitelist, asked
) -> None:
    """The executor (its own keys) seals its answered request afresh, again and again while the
    permit holds, to watch the person's data under one lawful attempt. The provider's register
    changes in between: the changed answer does not leave (a permit is for one answer, the one
    its receipt kept); the same answer again does (a retry after a lost reply)."""
    settings = direct_settings
    prefix = settings.task_queue_prefix
    flow, _, _, call = await _ran(direct_env, client, pool, settings, asked)
    receipts = await _receipts(pool, flow)
    changed = False
    served = dict(providers_for("city-minato", pool))
    original = served[call.request.info]

    async def watched(req: Any) -> Any:
        found = await original(req)
        if changed:  # the register changed since the attempt was answered
            first = next(iter(type(found).model_fields))
            return found.model_copy(update={first: getattr(found, first) * 2})
        return found

    served[call.request.info] = watched
    minato = _minato(client, pool, settings, catalog, live_whitelist, served)
    tokyo = _codec(client, pool, settings, "pref-tokyo")
    address = _free_address()
    async with DirectServer({"city-minato": minato}, prefix, address):

        async def ask() -> Any:
            again = await sealed_request(tokyo, prefix, call)
            return await opened_reply(tokyo, prefix, call, await _send(address, again))

        same = await ask()
        assert same is not None and same.failure is None and same.answer is not None
        changed = True
        watching = await ask()
    assert watching is not None and watching.answer is None and watching.failure is not None
    assert watching.failure.type == "LinkageRefused" and watching.failure.non_retryable
    assert "answered before, with another answer" in watching.failure.message
    assert await _receipts(pool, flow) == receipts


async def test_no_one_but_the_executor_can_ask_in_its_flows_name(
    direct_env, client, pool, direct_settings, asked
) -> None:
    """Another agency (its own keys), a process with no keys, and anyone replaying or
    tampering with an envelope on the network: none gets an answer, and nothing the provider
    could not check is recorded."""
    settings = direct_settings
    prefix = settings.task_queue_prefix
    flow, server, body, call = await _ran(direct_env, client, pool, settings, asked)
    kept = await records.query(pool, workflow_id=flow, keeper="city-minato")

    # Another agency seals the stolen request itself, in the executor's flow's name.
    # (Its codec will not seal in a pair it is not part of: it seals in its own pair with the
    # provider, as for a flow of its own, and puts the executor's flow on the envelope.)
    shibuya = _codec(client, pool, settings, "city-shibuya")
    with pytest.raises(ChannelError):
        await sealed_request(shibuya, prefix, call)
    own = f"child-rearing-allowance-income-check/city-shibuya/case-{uuid.uuid4().hex[:8]}"
    theirs = await sealed_request(shibuya, prefix, call.model_copy(update={"workflow_id": own}))
    forged = _rewrap(theirs, None, workflow_id=flow)
    code, reason = await _refused(server.address, forged)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "not sealed between the flow's executor and city-minato" in reason

    # A process with no keys: an envelope of the right shape whose sealed part no one sealed.
    _, _, sealed = envelope_of(body)
    blank = Payload(metadata=dict(sealed.metadata), data=os.urandom(len(sealed.data)))
    code, _ = await _refused(server.address, _rewrap(body, blank))
    assert code == grpc.StatusCode.PERMISSION_DENIED

    # The executor's genuine request under another flow's envelope.
    other = f"child-rearing-allowance-income-check/pref-tokyo/case-{uuid.uuid4().hex[:8]}"
    elsewhere = _rewrap(body, None, workflow_id=other)
    code, _ = await _refused(server.address, elsewhere)
    assert code == grpc.StatusCode.PERMISSION_DENIED

    # Not an envelope at all, or one for a provider this endpoint does not serve.
    code, reason = await _refused(server.address, b"\x00garbage")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _refused(server.address, _rewrap(body, None, provider="nobody"))
    assert code == grpc.StatusCode.NOT_FOUND

    # None of it reached the provider's records.
    assert await records.query(pool, workflow_id=flow, keeper="city-minato") == kept


async def test_a_stolen_permit_in_another_flow_is_refused_and_recorded(
    direct_env, client, pool, direct_settings, asked
) -> None:
    """Another agency that got hold of a real request (permit and sealed subject) asks with it
    from a flow of its own, sealed with its own keys: the provider's gate refuses it (the permit
    is for another attempt) and records the refusal under the attempt it was asked as; no
    answer, no receipt."""
    settings = direct_settings
    prefix = settings.task_queue_prefix
    _, server, _, call = await _ran(direct_env, client, pool, settings, asked)
    own_flow, theirs = _as_shibuyas(call)
    shibuya = _codec(client, pool, settings, "city-shibuya")
    reply = await opened_reply(
        shibuya,
        prefix,
        theirs,
        await _send(server.address, await sealed_request(shibuya, prefix, theirs)),
    )
    assert reply is not None and reply.answer is None and reply.failure is not None
    assert reply.failure.type == "LinkageRefused" and reply.failure.non_retryable
    refused = await records.query(pool, workflow_id=own_flow, keeper="city-minato")
    assert [(r.outcome, r.attempt_key) for r in refused] == [
        ("denied", attempt_key(own_flow, call.run_id, call.step))
    ]
    assert await _receipts(pool, own_flow) == []


def _rewrap(
    body: bytes,
    sealed: Payload | None,
    *,
    workflow_id: str | None = None,
    provider: str | None = None,
) -> bytes:
    """``body``'s envelope with its sealed request, its flow or its provider replaced."""
    envelope = Payload.FromString(body)
    if sealed is not None:
        envelope.data = sealed.SerializeToString()
    if workflow_id is not None:
        envelope.metadata["workflow-id"] = workflow_id.encode()
    if provider is not None:
        envelope.metadata["provider"] = provider.encode()
    return envelope.SerializeToString()


# -- attackers on the executor's side, and faults --------------------------------------------------


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@contextlib.asynccontextmanager
async def _answering(address: str, replies: list[bytes]) -> AsyncIterator[None]:
    """A rogue endpoint at ``address``: it answers every request with the next of ``replies``
    (real replies of the provider, captured on the network)."""
    queue = list(replies)

    async def answer(body: bytes, context: object) -> bytes:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async with _rogue(address, answer):
        yield


@contextlib.asynccontextmanager
async def _rogue(
    address: str, answer: Callable[[bytes, object], Awaitable[bytes]]
) -> AsyncIterator[None]:
    """An endpoint at ``address`` that is not the provider's: ``answer`` replies to each ask."""
    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(answer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("renkei.direct.v1.Linkage", {"Ask": handler}),)
    )
    server.add_insecure_port(address)
    await server.start()
    try:
        yield
    finally:
        await server.stop(grace=None)


async def test_a_reply_replayed_from_another_attempt_is_not_taken_and_the_provider_is_asked_again(
    direct_env, client, pool, direct_settings, catalog, live_whitelist, asked, caplog
) -> None:
    """Someone on the network between the executor and the provider answers in the provider's
    place with the provider's own replies to the executor, captured from an earlier flow: sealed
    in the right pair, signed by the provider, but for other attempts. The flow takes none, and
    does not fail for it either (anyone on the network can send them): it asks again, and once
    the provider itself answers, the linkage completes, with one receipt per attempt; nothing
    was recorded or receipted for the replies it did not take. Each reply not taken is logged
    for the operator (someone is on the path), naming the provider and the kind only."""
    caplog.set_level(logging.WARNING, logger="activities.direct")
    settings = direct_settings
    first, server, _, _ = await _ran(direct_env, client, pool, settings, asked)
    captured = [await server.answer(b) for _, b in _linkages(asked) if first.encode() in b]
    address = _free_address()
    rerouted = settings.model_copy(
        update={
            "linkage_endpoints": {"city-minato": address},
            "task_queue_prefix": f"t{uuid.uuid4().hex[:12]}",  # beside the first flow's workers
        }
    )
    others = tuple(a for a in SAMPLE_AGENCIES if a != "city-minato")
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    asks: list[bytes] = []

    async def replayed(body: bytes, context: object) -> bytes:
        asks.append(body)
        return captured[len(asks) % len(captured)]

    async with workers(client, pool, rerouted, catalog, live_whitelist, agencies=others):
        async with _rogue(address, replayed):
            handle = await RenkeiClient(client, rerouted).start(
                child_rearing(rerouted, h.members[0], h.members[1])
            )
            for _ in range(600):  # asked again after a replayed reply it did not take
                if len(asks) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(asks) >= 2, asks
        assert await records.query(pool, workflow_id=handle.id, keeper="city-minato") == []
        assert await _receipts(pool, handle.id) == []
        minato = _minato(client, pool, rerouted, catalog, live_whitelist)
        async with DirectServer({"city-minato": minato}, rerouted.task_queue_prefix, address):
            result = await handle.result()
    assert result.outcome == "completed", result
    receipts = await _receipts(pool, handle.id)
    assert len(receipts) == len(set(receipts)) == len(result.linkages), receipts
    assert set((await flow_outcomes(pool, handle.id)).values()) == {"provided"}
    not_taken = [r.getMessage() for r in caplog.records if r.name == "activities.direct"]
    assert any(
        "city-minato's endpoint" in m and "a reply to another attempt" in m for m in not_taken
    ), not_taken


async def test_a_provider_out_of_reach_is_asked_again_until_it_is_back(
    client, pool, direct_settings, catalog, live_whitelist
) -> None:
    """The provider's endpoint is down when the flow asks: the flow asks again within its
    step's retries, and once the endpoint is up, the linkage completes with one record per
    party and one receipt per attempt, however many asks failed before."""
    address = _free_address()
    settings = direct_settings.model_copy(update={"linkage_endpoints": {"city-minato": address}})
    others = tuple(a for a in SAMPLE_AGENCIES if a != "city-minato")
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    async with workers(client, pool, settings, catalog, live_whitelist, agencies=others):
        handle = await RenkeiClient(client, settings).start(
            child_rearing(settings, h.members[0], h.members[1])
        )
        # The hub has permitted the first linkage: the flow is asking an endpoint that is down.
        while True:
            if await records.query(pool, workflow_id=handle.id, keeper=records.HUB):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # at least one ask has failed (the first retry is after 1 s)
        assert await records.query(pool, workflow_id=handle.id, keeper="city-minato") == []
        minato = _minato(client, pool, settings, catalog, live_whitelist)
        async with DirectServer({"city-minato": minato}, settings.task_queue_prefix, address):
            assert (await handle.result()).outcome == "completed"
    kept = await records.query(pool, workflow_id=handle.id, keeper="city-minato")
    assert sorted(r.step for r in kept) == ["household", "own_income", "spouse_income"]
    assert len(await _receipts(pool, handle.id)) == 3
    assert set((await flow_outcomes(pool, handle.id)).values()) == {"provided"}


async def test_an_attempt_after_one_that_failed_has_its_own_time_in_full(
    client, pool, direct_settings, catalog, live_whitelist, monkeypatch
) -> None:
    """The provider's endpoint fails the first ask after 2 s, then takes 1 s to answer each
    ask (the step allows 3 s an attempt, 5 attempts). The second attempt is answered within its
    own 3 s and the flow completes. (Temporal's SDK keeps an earlier attempt's start-to-close
    timer of a local activity running, sdk-rust#1454: it cut the second attempt about 0.85 s
    in, 3 s after the first began, and so each later one, and the linkage failed with every
    attempt answered in time. Each attempt keeps a second or more to spare on a busy machine.)"""
    from activities.direct import Refused

    await register_fixture(pool, "retry-probe.yaml")  # 3 s an attempt, 5 attempts
    settings = direct_settings
    original = DirectServer.answer
    asks: list[float] = []

    async def answer(self: DirectServer, body: bytes) -> bytes:
        if envelope_of(body)[0] != "city-shibuya":
            return await original(self, body)
        asks.append(asyncio.get_running_loop().time())
        if len(asks) == 1:
            await asyncio.sleep(2)
            raise Refused(grpc.StatusCode.UNAVAILABLE, "restarting")
        await asyncio.sleep(1)
        return await original(self, body)

    monkeypatch.setattr(DirectServer, "answer", answer)
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await RenkeiClient(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        result = await handle.result()
    assert result.outcome == "completed", result
    assert result.result == {"income": h.members[0].taxable_income}
    assert len(asks) == 2, [round(t - asks[0], 2) for t in asks]


async def test_a_provider_cannot_say_the_executors_attempt_timed_out(
    client, pool, direct_settings, catalog, live_whitelist, monkeypatch
) -> None:
    """city-shibuya's endpoint seals, as its failure, the details the executor's own worker
    gives an attempt that ran out of its time (final, at once): the flow does not take it for
    its attempts spent waiting (StepTimedOut), it fails with the provider's own failure."""
    from activities.direct import DirectFailure
    from renkei.contracts.failures import TIMED_OUT, UNREACHED

    await register_fixture(pool, "retry-probe.yaml")

    async def answer(
        self: DirectServer, provider: str, served: Served, call: Any
    ) -> tuple[None, DirectFailure]:
        return None, DirectFailure(
            type="ProviderError",
            message="no answer in time",
            non_retryable=True,
            details=[UNREACHED, TIMED_OUT],
        )

    monkeypatch.setattr(DirectServer, "_answer", answer)
    settings = direct_settings
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await RenkeiClient(client, settings).start(
            start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProviderError", cause


@contextlib.asynccontextmanager
async def _reflecting(address: str, reflected: list[bytes]) -> AsyncIterator[None]:
    """A rogue endpoint at ``address``: it sends each request back as its reply (the sealed
    request, out of its envelope: it opens in the same pair and names the same attempt)."""

    async def answer(body: bytes, context: object) -> bytes:
        reflected.append(body)
        return Payload.FromString(body).data

    async with _rogue(address, answer):
        yield


async def test_a_request_sent_back_as_its_reply_is_an_endpoint_out_of_reach(
    client, pool, direct_settings, catalog, live_whitelist
) -> None:
    """Someone on the network sends the flow's own sealed request back as the provider's reply:
    it opens in the same pair and names the same attempt, with neither an answer nor a failure.
    Taken as a forged answer it would have failed the step for good on a packet anyone can send;
    it is an endpoint out of reach: the flow asks again, and completes once the provider
    answers, with one record and one receipt per attempt."""
    address = _free_address()
    settings = direct_settings.model_copy(update={"linkage_endpoints": {"city-minato": address}})
    others = tuple(a for a in SAMPLE_AGENCIES if a != "city-minato")
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    reflected: list[bytes] = []
    async with workers(client, pool, settings, catalog, live_whitelist, agencies=others):
        async with _reflecting(address, reflected):
            handle = await RenkeiClient(client, settings).start(
                child_rearing(settings, h.members[0], h.members[1])
            )
            for _ in range(600):
                if reflected:
                    break
                await asyncio.sleep(0.05)
            assert reflected, "the flow never asked"
        minato = _minato(client, pool, settings, catalog, live_whitelist)
        async with DirectServer({"city-minato": minato}, settings.task_queue_prefix, address):
            assert (await handle.result()).outcome == "completed"
    kept = await records.query(pool, workflow_id=handle.id, keeper="city-minato")
    assert sorted(r.step for r in kept) == ["household", "own_income", "spouse_income"]
    assert len(await _receipts(pool, handle.id)) == 3


# -- attackers on the network between the executor and the provider ------------------------------


def _minato(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist: LiveWhitelist,
    served: Mapping[str, Any] | None = None,
) -> Served:
    """city-minato as its own endpoint serves it (its gate, its code, its keys alone);
    ``served``: its code for each item, if not the sample's."""
    gate = WhitelistGate(
        "city-minato",
        live_whitelist.bind(catalog),
        live_whitelist,
        pool,
        keys.load_org(settings, "city-minato"),
        operation=settings.mode == "operation",
    )
    return Served(
        gate,
        served if served is not None else providers_for("city-minato", pool),
        _codec(client, pool, settings, "city-minato"),
    )


async def test_a_status_anyone_on_the_network_sends_is_no_refusal_of_the_provider(
    client, pool, direct_settings, catalog, live_whitelist
) -> None:
    """Someone between the executor and the provider answers the first ask with a gRPC status
    of refusal (no keys needed: a status is not sealed). The flow does not take it as the
    provider's refusal (nor the hub a ``denied``): it asks again, and the provider answers."""
    settings = direct_settings
    real, address = _free_address(), _free_address()
    settings = settings.model_copy(update={"linkage_endpoints": {"city-minato": address}})
    others = tuple(a for a in SAMPLE_AGENCIES if a != "city-minato")
    minato = _minato(client, pool, settings, catalog, live_whitelist)
    forged = 0

    async def answer(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        nonlocal forged
        if forged < 3:  # one for each code the endpoint itself refuses with
            code = [
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
            ][forged]
            forged += 1
            await context.abort(code, "linkage refused: denied by the whitelist (forged)")
        return await _send(real, body)

    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(answer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("renkei.direct.v1.Linkage", {"Ask": handler}),)
    )
    server.add_insecure_port(address)
    await server.start()
    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    try:
        async with (
            DirectServer({"city-minato": minato}, settings.task_queue_prefix, real),
            workers(client, pool, settings, catalog, live_whitelist, agencies=others),
        ):
            handle = await RenkeiClient(client, settings).start(
                child_rearing(settings, h.members[0], h.members[1])
            )
            assert (await handle.result()).outcome == "completed"
    finally:
        await server.stop(grace=None)
    assert forged == 3
    assert set((await flow_outcomes(pool, handle.id)).values()) == {"provided"}


async def test_requests_that_never_arrive_do_not_hold_the_endpoint(
    direct_env, client, pool, direct_settings, catalog, live_whitelist, asked, monkeypatch
) -> None:
    """A process with no keys opens as many calls as the endpoint serves at once and sends
    nothing on them (nor any deadline): each is ended with a clear status once the time a
    request may take to arrive has passed, and the endpoint then serves a real request."""
    settings = direct_settings
    _, _, body, _ = await _ran(direct_env, client, pool, settings, asked)
    monkeypatch.setattr("activities.direct.MAX_CONCURRENT", 4)
    monkeypatch.setattr("activities.direct.ARRIVAL", 1.0, raising=False)
    minato = _minato(client, pool, settings, catalog, live_whitelist)
    address = _free_address()
    never = asyncio.Event()

    async def nothing() -> AsyncIterator[bytes]:
        await never.wait()
        yield b""

    async with (
        DirectServer({"city-minato": minato}, settings.task_queue_prefix, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        opened: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(METHOD)
        calls = [opened(nothing()) for _ in range(4)]
        ended = await asyncio.wait_for(
            asyncio.gather(*(c.code() for c in calls)), timeout=30
        )  # a guard against hanging: each ends after about a second
        assert set(ended) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert "did not arrive" in (await calls[0].details() or "")
        reply = await _send(address, body)
    never.set()
    assert reply


async def test_envelopes_naming_unknown_keys_do_not_make_the_endpoint_read_the_registry_each(
    direct_env, client, pool, direct_settings, catalog, live_whitelist, asked, monkeypatch
) -> None:
    """A process with no keys sends envelopes whose sealed part names, in clear, a key no one
    has (a new one each time): each is refused at once, and the endpoint reads the registry
    once for them all, not once per envelope (each read takes the whole registry and checks
    the hub's signature on every row), nor does any wait for the next read."""
    settings = direct_settings
    _, _, body, _ = await _ran(direct_env, client, pool, settings, asked)
    monkeypatch.setattr("renkei.kernel.channels.RELOAD_INTERVAL", 3600.0, raising=False)
    minato = _minato(client, pool, settings, catalog, live_whitelist)
    directory = minato.codec.directory
    refresh = directory._refresh
    assert refresh is not None
    reads = 0

    async def counted() -> Mapping[str, Iterable[X25519PublicKey]]:
        nonlocal reads
        reads += 1
        return await refresh()

    directory.set_refresh(counted)
    _, _, sealed = envelope_of(body)
    p1, k1, p2, k2 = sealed.metadata[CHANNEL].decode().split(",")

    def unknown() -> bytes:
        forged = Payload()
        forged.CopyFrom(sealed)
        kid = os.urandom(len(k1) // 2).hex()
        pair = f"{p1},{kid},{p2},{k2}" if p1 == "pref-tokyo" else f"{p1},{k1},{p2},{kid}"
        forged.metadata[CHANNEL] = pair.encode()
        return _rewrap(body, forged)

    address = _free_address()
    async with DirectServer({"city-minato": minato}, settings.task_queue_prefix, address):
        refused = await asyncio.gather(*(_refused(address, unknown()) for _ in range(100)))
        # the executor's own request is still served: its key was found by that one read
        reply = await _send(address, body)
    assert {code for code, _ in refused} == {grpc.StatusCode.PERMISSION_DENIED}
    assert reads <= 1
    assert reply


async def test_a_sealed_request_that_is_no_request_is_answered_invalid_argument(
    direct_env, client, pool, direct_settings, asked, caplog
) -> None:
    """The executor itself (its own keys) seals bytes that are not a request at all: the
    provider's endpoint answers with a clear status, not an error of its own, and logs no
    traceback of it."""
    settings = direct_settings
    prefix = settings.task_queue_prefix
    flow, server, body, _ = await _ran(direct_env, client, pool, settings, asked)
    tokyo = _codec(client, pool, settings, "pref-tokyo")
    sealing = _sealing(tokyo, prefix, "city-minato", flow)
    channel, cipher = await sealing._cipher("pref-tokyo", "city-minato")
    nonce = os.urandom(12)
    aad = b"renkei/channel/v1|" + channel.encode()
    garbage = Payload(
        metadata={"encoding": ENCODING, CHANNEL: channel.encode()},
        data=nonce + cipher.encrypt(nonce, b"\xff\xff\xff\xff", aad),
    )
    caplog.clear()
    code, reason = await _refused(server.address, _rewrap(body, garbage))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "malformed linkage request")
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_request_replayed_by_anyone_does_not_run_the_gate_again(
    direct_env, client, pool, direct_settings, catalog, live_whitelist, asked, monkeypatch
) -> None:
    """Anyone who captured an executor's envelope on the network sends it again and again
    while its permit holds: it reads nothing of the replies, but each would have run the
    provider's gate again (the chain's lock for its record, the provider's code, its receipt).
    The endpoint runs the gate once for it and answers the rest with the reply it had."""
    settings = direct_settings
    _, _, body, call = await _ran(direct_env, client, pool, settings, asked)
    minato = _minato(client, pool, settings, catalog, live_whitelist)
    runs = 0
    serve = WhitelistGate.serve

    async def counted(self: WhitelistGate, *args: Any, **kwargs: Any) -> object:
        nonlocal runs
        runs += 1
        return await serve(self, *args, **kwargs)

    monkeypatch.setattr(WhitelistGate, "serve", counted)
    address = _free_address()
    tokyo = _codec(client, pool, settings, "pref-tokyo")
    async with DirectServer({"city-minato": minato}, settings.task_queue_prefix, address):
        for _ in range(20):
            reply = await opened_reply(
                tokyo, settings.task_queue_prefix, call, await _send(address, body)
            )
            assert reply is not None and reply.answer is not None
    assert runs == 1


async def test_refusals_at_the_endpoint_are_counted_as_through_the_queue(
    direct_env, client, pool, direct_settings, catalog, live_whitelist, asked
) -> None:
    """The operator alerts on ``renkei_refused_requests``: a request not sealed by the flow's
    executor, another agency's stolen permit, and a request past what a record holds (a
    malformed one, refused unrecorded) are counted at the endpoint as they are on
    the provider's queue (where the gate runs in an activity), not left out because the
    direct channel's gate runs in none."""
    settings = direct_settings
    prefix = settings.task_queue_prefix
    _, _, body, call = await _ran(direct_env, client, pool, settings, asked)
    buffer = MetricBuffer(1000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    minato = _minato(client, pool, settings, catalog, live_whitelist)
    address = _free_address()
    _, _, sealed = envelope_of(body)
    blank = Payload(metadata=dict(sealed.metadata), data=os.urandom(len(sealed.data)))
    _, theirs = _as_shibuyas(call)
    shibuya = _codec(client, pool, settings, "city-shibuya")
    async with DirectServer({"city-minato": minato}, prefix, address, meter=runtime.metric_meter):
        await _refused(address, _rewrap(body, blank))
        await _send(address, await sealed_request(shibuya, prefix, theirs))
        # sealed by the flow's executor, naming a task past what a record holds
        big = call.request.model_copy(update={"requester": "city-shibuya", "task": "x" * 201})
        code_, _ = await _refused(
            address,
            await sealed_request(shibuya, prefix, theirs.model_copy(update={"request": big})),
        )
        assert code_ == grpc.StatusCode.INVALID_ARGUMENT
    counted = [
        dict(u.attributes)
        for u in buffer.retrieve_updates()
        if u.metric.name == "renkei_refused_requests"
    ]
    assert {(c["provider"], c["reason"]) for c in counted} == {
        ("city-minato", "a direct request not sealed by the flow's executor"),
        ("city-minato", "the permit is for another attempt (replayed)"),
        ("city-minato", "a malformed request"),
    }


async def test_an_observer_of_the_wire_cannot_tell_a_households_size_from_the_reply(
    direct_env, client, pool, direct_settings, asked
) -> None:
    """The envelope names the flow (its case) in clear, and the sealed reply's length would
    follow what it holds: the members of the household, say. Two flows about households of
    three and of five people get household replies of the same length."""
    settings = direct_settings
    prefix = settings.task_queue_prefix
    tokyo = _codec(client, pool, settings, "pref-tokyo")
    lengths = []
    for size in (3, 5):
        h = next(
            h
            for h in households(settings)
            if (h.kind, h.municipality, len(h.members)) == ("family", "city-minato", size)
        )
        handle = await direct_env.start(child_rearing(settings, h.members[0], h.members[1]))
        assert (await handle.result()).outcome == "completed"
        for server, body in [(s, b) for s, b in _linkages(asked) if handle.id.encode() in b]:
            provider, workflow_id, sealed = envelope_of(body)
            call = await open_request(tokyo, prefix, provider, workflow_id, sealed)
            if call.step == "household":
                reply = await opened_reply(tokyo, prefix, call, await server.answer(body))
                assert reply is not None and reply.answer is not None
                assert len(reply.answer["answer"]["members"]) == size
                lengths.append(len(await server.answer(body)))
    assert len(lengths) == 2 and lengths[0] == lengths[1], lengths


@workflow.defn(name="rogue-direct-ask", sandboxed=False)
class _RogueAsk:
    """Any process that reaches Temporal: it schedules one of the executor's direct-channel
    activities (its ask of a provider, or of the hub to resolve a run) as an activity on the
    executor's own control queue, with a request it got hold of, for a run it names (an empty
    ``workflow_id``: itself, so that the ids of the request and of the calling run agree)."""

    @workflow.run
    async def run(self, activity: str, queue: str, call: dict[str, Any]) -> str:
        if call.get("workflow_id") == "":
            info = workflow.info()
            call = {**call, "workflow_id": info.workflow_id, "run_id": info.run_id}
        try:
            await workflow.execute_activity(
                activity,
                call,
                task_queue=queue,
                start_to_close_timeout=dt.timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            return f"refused: {err.cause}"
        return "answered"


async def test_no_process_outside_the_flow_can_run_its_direct_ask(
    direct_env, client, pool, direct_settings, asked
) -> None:
    """A process with no keys schedules ``renkei.direct-linkage`` on the executor's control
    queue, where the executor's worker serves it, with a real request of the executor's flow:
    the executor's worker does not ask the provider for it, and the provider records nothing
    more."""
    settings = direct_settings
    flow, _, _, call = await _ran(direct_env, client, pool, settings, asked)
    kept = await records.query(pool, workflow_id=flow, keeper="city-minato")
    sent = len(asked)
    rogue = Client(client.service_client, namespace=client.namespace)  # no keys, no codec
    queue = f"rogue-{uuid.uuid4().hex[:8]}"
    async with Worker(rogue, task_queue=queue, workflows=[_RogueAsk]):
        outcome = await rogue.execute_workflow(
            _RogueAsk.run,
            args=[
                DIRECT_LINKAGE,
                control_queue(settings.task_queue_prefix, "pref-tokyo"),
                call.model_dump(),
            ],
            id=f"rogue/{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
    assert outcome.startswith("refused"), outcome
    assert len(asked) == sent  # the provider's endpoint was not asked
    assert await records.query(pool, workflow_id=flow, keeper="city-minato") == kept
