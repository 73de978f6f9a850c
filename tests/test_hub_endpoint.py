"""The hub's endpoint (``RENKEI_HUB_TRANSPORT=direct``, :func:`activities.direct.resolve_run`):
a new run asks the hub to resolve it from a local activity of its own, and every check of
``hub.resolve`` on the hub's queue holds the same.

What an activity on the hub's queue has from Temporal (which run asks) the hub takes from
Temporal's description of the run the request names; who asks, from the pair the request is
sealed in. The attacker tests play the executor itself (its own keys: it may ask for its own runs
only as they are), another agency, a process with no keys, and anyone on the network.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.claims import kept_ticket, runs_ticket
from activities.direct import DirectServer, _reply, _sealed, envelope_of
from renkei.app.client import RenkeiClient
from renkei.contracts.failures import Failure
from renkei.contracts.messages import DirectResolve, DirectResolved, ResolveRequest
from renkei.contracts.names import DIRECT_RESOLVE, HUB, control_queue, executor_of, workflow_id
from renkei.kernel import keys
from renkei.kernel import search_attributes as sa
from renkei.kernel.channels import ChannelCodec, ChannelError
from renkei.kernel.settings import Settings

from .helpers import calls_to_the_hub, code, endpoints_of, pick, register_fixture, start, workers
from .test_direct import _codec, _free_address, _refused, _rewrap, _rogue, _RogueAsk, _send

BPF = "wait-first-probe"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, runs resolved at the hub's endpoint (the default, whatever the
    suite's settings say)."""
    return settings.model_copy(update={"hub_transport": "direct"})


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


def _subject(settings: Settings, n: int = 0) -> str:
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[n]
    return code(settings, "city-minato", person)


async def _waiting(settings: Settings, client: Client) -> WorkflowHandle[Any, Any]:
    """city-minato's portal application that waits first, started as the platform starts one:
    resolved, and waiting for its applicant."""
    handle = await RenkeiClient(client, settings).start(
        start(BPF, "city-minato", _subject(settings), trigger="portal")
    )
    for _ in range(400):
        if await handle.query("renkei.waiting"):
            return handle
        await asyncio.sleep(0.05)
    raise AssertionError("the run never waited")


def _request(settings: Settings, **kw: Any) -> ResolveRequest:
    fields: dict[str, Any] = {
        "bpf": BPF,
        "version": None,
        "executor": "city-minato",
        "subject": _subject(settings),
        "inputs": {},
        "trigger": "portal",
        "reads_signed_tickets": True,
    }
    return ResolveRequest(**(fields | kw))


async def _ask(
    address: str, codec: ChannelCodec, settings: Settings, call: DirectResolve
) -> DirectResolved | str:
    """``call`` sealed as ``codec``'s party seals it, sent to the hub's endpoint: the hub's
    reply as opened, or the gRPC status."""
    prefix = settings.task_queue_prefix
    body = await _sealed(codec, prefix, HUB, call.workflow_id, call)
    try:
        sent = await _send(address, body)
    except grpc.aio.AioRpcError as err:
        return err.code().name
    reply = await _reply(codec, prefix, HUB, call.workflow_id, sent, DirectResolved)
    assert reply is not None, "a reply the executor cannot open"
    return reply


def _refusal(reply: DirectResolved | str) -> str:
    if isinstance(reply, str):
        return reply
    assert reply.run is None and reply.failure is not None, reply
    return f"{reply.failure.type}: {reply.failure.message}"


@workflow.defn(name=BPF, sandboxed=False)
class _OwnRun:
    """city-minato's own workflow, named and typed as its flow's run, on a queue of its own."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False, timeout=dt.timedelta(minutes=5))


async def test_a_run_is_resolved_over_the_hubs_endpoint_only_as_temporal_says_it_is(
    client, pool, settings, catalog, live_whitelist, asked
) -> None:
    """A new run asks the hub over its endpoint: its history has no activity on the hub's queue,
    and the hub keeps its one ticket, for that run and person. city-minato itself, with its own
    keys, then asks the hub's endpoint in its runs' names: the same run about another person, as
    a flow another flow calls, a run that does not exist, a run of its own on a queue of its
    own (named and typed as the flow's), and the run once it has ended. Each is refused."""
    await register_fixture(pool, f"{BPF}.yaml")
    minato = _codec(client, pool, settings, "city-minato")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await _waiting(settings, client)
        run = (await handle.describe()).run_id or ""
        history = await handle.fetch_history()
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert scheduled == [], scheduled  # resolved without the hub's queue
        assert any(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED for e in history.events)
        hub = keys.load(settings).signer().public_key()
        ticket = runs_ticket(
            hub, await kept_ticket(pool, handle.id, run), handle.id, run, settings.mode
        )
        assert ticket is not None and ticket.subject == _subject(settings)

        address = endpoints_of(settings)[HUB]
        became = [
            await _ask(
                address,
                minato,
                settings,
                DirectResolve(workflow_id=handle.id, run_id=run, request=request),
            )
            for request in (
                _request(settings, subject=_subject(settings, 1)),
                _request(settings).model_copy(update={"called_by": handle.id}),
            )
        ]
        became.append(
            await _ask(
                address,
                minato,
                settings,
                DirectResolve(
                    workflow_id=handle.id, run_id=str(uuid.uuid4()), request=_request(settings)
                ),
            )
        )
        own = party_client_of(client, pool, settings, "city-minato")
        queue = f"{settings.task_queue_prefix}.own-{uuid.uuid4().hex[:6]}"
        wid = f"{BPF}/city-minato/own-{uuid.uuid4().hex[:8]}"
        async with Worker(own, task_queue=queue, workflows=[_OwnRun]):
            mine = await own.start_workflow(_OwnRun.run, id=wid, task_queue=queue)
            became.append(
                await _ask(
                    address,
                    minato,
                    settings,
                    DirectResolve(
                        workflow_id=wid, run_id=mine.result_run_id or "", request=_request(settings)
                    ),
                )
            )
            await mine.terminate()
        await handle.terminate()
        became.append(
            await _ask(
                address,
                minato,
                settings,
                DirectResolve(workflow_id=handle.id, run_id=run, request=_request(settings)),
            )
        )
    refusals = [_refusal(b) for b in became]
    assert [r.split(":")[0] for r in refusals] == ["MalformedStart"] * 5, refusals
    assert "resolved this run before" in refusals[0]
    assert "another flow calls" in refusals[1]
    assert "no such run" in refusals[2]
    assert "own control queue" in refusals[3]
    assert "ended" in refusals[4]
    # the one ticket, as first issued
    assert (
        runs_ticket(hub, await kept_ticket(pool, handle.id, run), handle.id, run, settings.mode)
        == ticket
    )
    assert await kept_ticket(pool, wid, mine.result_run_id or "") is None


def party_client_of(client: Client, pool: asyncpg.Pool, settings: Settings, party: str) -> Client:
    from workers.plugin import attach_registry, party_client

    own = party_client(client, settings, [party])
    attach_registry(own, pool, settings)
    return own


async def test_no_one_but_the_executor_can_ask_the_hub_in_its_runs_name(
    client, pool, settings, catalog, live_whitelist, asked
) -> None:
    """Another agency (its own keys), a process with no keys, and anyone replaying or
    re-addressing an envelope on the network: none has a run resolved, and the hub keeps the
    run's one ticket."""
    await register_fixture(pool, f"{BPF}.yaml")
    prefix = settings.task_queue_prefix
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await _waiting(settings, client)
        run = (await handle.describe()).run_id or ""
        server, body = next(
            (s, b) for s, b in asked if envelope_of(b)[0] == HUB and envelope_of(b)[1] == handle.id
        )
        call = DirectResolve(workflow_id=handle.id, run_id=run, request=_request(settings))

        # Another agency cannot seal in the pair of city-minato and the hub; sealed in its own
        # pair for a flow of its own and put under city-minato's flow, it is refused unopened.
        shibuya = _codec(client, pool, settings, "city-shibuya")
        with pytest.raises(ChannelError):
            await _sealed(shibuya, prefix, HUB, handle.id, call)
        theirs_id = f"{BPF}/city-shibuya/case-{uuid.uuid4().hex[:8]}"
        theirs = await _sealed(
            shibuya,
            prefix,
            HUB,
            theirs_id,
            call.model_copy(update={"workflow_id": theirs_id}),
        )
        status, reason = await _refused(
            server.address, _rewrap(theirs, None, workflow_id=handle.id)
        )
        assert status == grpc.StatusCode.PERMISSION_DENIED, reason
        # The same, asked under its own flow's name: no such run of city-shibuya's.
        reply = await _ask(
            server.address, shibuya, settings, call.model_copy(update={"workflow_id": theirs_id})
        )
        assert _refusal(reply).startswith("MalformedStart"), reply

        # A process with no keys: the envelope's shape, sealed by no one.
        _, _, sealed = envelope_of(body)
        blank = Payload(metadata=dict(sealed.metadata), data=os.urandom(len(sealed.data)))
        status, _ = await _refused(server.address, _rewrap(body, blank))
        assert status == grpc.StatusCode.PERMISSION_DENIED

        # The run's genuine envelope under another flow's name.
        other = f"{BPF}/city-minato/case-{uuid.uuid4().hex[:8]}"
        status, _ = await _refused(server.address, _rewrap(body, None, workflow_id=other))
        assert status == grpc.StatusCode.PERMISSION_DENIED

        # The genuine envelope sent again: the reply it had, sealed to the executor.
        assert await _send(server.address, body) == await _send(server.address, body)
        await handle.terminate()
    rows = await pool.fetch("SELECT run_id FROM hub.run_tickets WHERE workflow_id = $1", handle.id)
    assert [r["run_id"] for r in rows] == [run]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM hub.run_tickets WHERE workflow_id IN ($1, $2)", theirs_id, other
        )
        == 0
    )


async def test_no_process_outside_the_flow_can_have_it_resolved(
    client, pool, settings, catalog, live_whitelist, asked
) -> None:
    """A process with no keys schedules the executor's ``renkei.direct-resolve`` on its control
    queue, for the executor's waiting run; city-minato's own workflow, with its keys, for
    itself (the ids of the run it names and of the calling run agree). The executor's worker
    asks the hub for neither: only a run's own local activity asks."""
    await register_fixture(pool, f"{BPF}.yaml")
    minato = party_client_of(client, pool, settings, "city-minato")
    rogue = Client(client.service_client, namespace=client.namespace)  # no keys, no codec
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await _waiting(settings, client)
        run = (await handle.describe()).run_id or ""
        sent = len(asked)
        call = DirectResolve(workflow_id=handle.id, run_id=run, request=_request(settings))
        itself = call.model_copy(update={"workflow_id": "", "run_id": ""})
        became = []
        for who, named in ((rogue, call), (minato, itself)):
            queue = f"rogue-{uuid.uuid4().hex[:8]}"
            async with Worker(who, task_queue=queue, workflows=[_RogueAsk]):
                became.append(
                    await who.execute_workflow(
                        _RogueAsk.run,
                        args=[
                            DIRECT_RESOLVE,
                            control_queue(settings.task_queue_prefix, "city-minato"),
                            named.model_dump(mode="json"),
                        ],
                        id=f"{BPF}/city-minato/rogue-{uuid.uuid4().hex[:8]}",
                        task_queue=queue,
                    )
                )
        assert len(asked) == sent  # the hub's endpoint was not asked
        await handle.terminate()
    assert all(b.startswith("refused") for b in became), became
    assert "by its own flow only" in became[1], became


async def test_a_reply_that_is_not_the_hubs_is_not_taken_and_the_hub_is_asked_again(
    client, pool, settings, catalog, live_whitelist, caplog, asked
) -> None:
    """Someone on the network answers a run's request in the hub's place: with the hub's genuine
    reply to another run of the same executor (it opens in the pair: taken, the run would go on
    as that run was resolved), then with the run's own sealed request sent back (it opens in the
    pair and names the run). Neither is the hub's word: the run asks again, and is resolved
    once the hub's endpoint is reached, with its own one ticket."""
    await register_fixture(pool, f"{BPF}.yaml")
    address = _free_address()
    sent_back: list[bytes] = []
    async with workers(client, pool, settings, catalog, live_whitelist):
        other = await _waiting(settings, client)
        server, body = next((s, b) for s, b in asked if envelope_of(b)[:2] == (HUB, other.id))
        captured = await server.answer(body)  # the reply it had, as sent on the network

        async def answer(request: bytes, context: object) -> bytes:
            sent_back.append(request)
            return captured if len(sent_back) == 1 else Payload.FromString(request).data

        endpoints = endpoints_of(settings)
        real = endpoints[HUB]
        endpoints[HUB] = address
        try:
            async with _rogue(address, answer):
                started = asyncio.create_task(_waiting(settings, client))
                for _ in range(600):
                    if len(sent_back) >= 3:
                        break
                    await asyncio.sleep(0.05)
                assert len(sent_back) >= 3, "the run did not ask again"
        finally:
            endpoints[HUB] = real
        handle = await started
        run = (await handle.describe()).run_id or ""
        await handle.terminate()
        await other.terminate()
    rows = await pool.fetch("SELECT run_id FROM hub.run_tickets WHERE workflow_id = $1", handle.id)
    assert [r["run_id"] for r in rows] == [run]
    # not silently: someone on the path is the operator's to know
    not_taken = [
        r.getMessage()
        for r in caplog.records
        if "hub's endpoint" in r.getMessage() and "not taken" in r.getMessage()
    ]
    assert len(not_taken) >= 2, not_taken


async def test_a_hub_endpoint_out_of_reach_costs_a_run_a_few_tries_then_it_asks_on_the_queue(
    client, pool, settings, catalog, live_whitelist, caplog
) -> None:
    """The hub's endpoint is out of reach (nothing listens at its address). A new run asks it a
    few times within its first workflow task, then asks ``hub.resolve`` on the hub's queue,
    where an outage costs its history nothing while it lasts: the run is resolved, with its one
    ticket, and its history stays short. (Before, it asked the endpoint again for as long as
    the outage lasted, its history growing every few seconds.)"""
    await register_fixture(pool, f"{BPF}.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        endpoints = endpoints_of(settings)
        real = endpoints[HUB]
        endpoints[HUB] = _free_address()
        try:
            handle = await _waiting(settings, client)
        finally:
            endpoints[HUB] = real
        history = await handle.fetch_history()
        run = (await handle.describe()).run_id or ""
        await handle.terminate()
    on_queue = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "hub.resolve"
    ]
    assert len(on_queue) == 1
    assert on_queue[0].task_queue.name == f"{settings.task_queue_prefix}.hub"
    tried = [
        e
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    assert len(tried) == 1 and tried[0].marker_recorded_event_attributes.HasField("failure")
    assert len(history.events) < 40, len(history.events)
    rows = await pool.fetch("SELECT run_id FROM hub.run_tickets WHERE workflow_id = $1", handle.id)
    assert [r["run_id"] for r in rows] == [run]
    assert any("asks on the hub's queue" in r.getMessage() for r in caplog.records)


async def test_one_executor_cannot_take_the_hubs_endpoint_from_the_others(
    client, pool, settings, catalog, live_whitelist, monkeypatch
) -> None:
    """city-minato, with its own keys, holds its share of the hub's endpoint (here one request,
    slow to serve) and sends more: each is refused at once ("resource exhausted"; its run would
    ask again, then go to the hub's queue), while pref-tokyo's request is served. Once
    city-minato's request is answered, its next is served again."""
    import activities.direct as direct

    monkeypatch.setattr(direct, "PER_PARTY", 1)
    entered, release = asyncio.Event(), asyncio.Event()
    original = direct.resolve_run

    async def slow(hub: Any, prefix: str, call: DirectResolve) -> DirectResolved:
        if executor_of(call.workflow_id) == "city-minato":
            entered.set()
            await release.wait()
        return await original(hub, prefix, call)

    monkeypatch.setattr(direct, "resolve_run", slow)
    codecs = {a: _codec(client, pool, settings, a) for a in ("city-minato", "pref-tokyo")}

    def ask(executor: str) -> Any:
        wid = workflow_id(BPF, executor, f"case-{uuid.uuid4().hex[:10]}")
        call = DirectResolve(
            workflow_id=wid, run_id=str(uuid.uuid4()), request=_request(settings, executor=executor)
        )
        return _ask(endpoints_of(settings)[HUB], codecs[executor], settings, call)

    async with workers(client, pool, settings, catalog, live_whitelist):
        first = asyncio.create_task(ask("city-minato"))
        await asyncio.wait_for(entered.wait(), 30)
        assert await ask("city-minato") == "RESOURCE_EXHAUSTED"
        assert await ask("city-minato") == "RESOURCE_EXHAUSTED"
        other = await ask("pref-tokyo")  # served: the hub's word on a run it cannot find
        assert isinstance(other, DirectResolved) and other.failure is not None, other
        release.set()
        assert isinstance(await first, DirectResolved)
        assert isinstance(await ask("city-minato"), DirectResolved)


async def test_a_hub_too_slow_is_asked_once_then_on_the_queue(
    client, pool, settings, catalog, live_whitelist, monkeypatch
) -> None:
    """The hub's endpoint answers too slowly (its resolution takes longer than a try's time):
    the run does not have the hub do the same work again there, it asks on the hub's queue at
    once, and is resolved with its one ticket."""
    import activities.direct as direct

    served: list[str] = []
    original = direct.resolve_run

    async def slow(hub: Any, prefix: str, call: DirectResolve) -> DirectResolved:
        served.append(call.run_id)
        await asyncio.sleep(60)  # past the try's time: the endpoint's call is given up
        return await original(hub, prefix, call)

    monkeypatch.setattr(direct, "resolve_run", slow)
    await register_fixture(pool, f"{BPF}.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await _waiting(settings, client)
        history = await handle.fetch_history()
        run = (await handle.describe()).run_id or ""
        await handle.terminate()
    assert calls_to_the_hub(history) == [("hub.resolve", True), ("hub.resolve", False)]
    assert served == [run]  # asked once over the endpoint
    rows = await pool.fetch("SELECT run_id FROM hub.run_tickets WHERE workflow_id = $1", handle.id)
    assert [r["run_id"] for r in rows] == [run]


async def test_a_try_after_two_that_failed_has_its_own_time_in_full(
    client, pool, settings, catalog, live_whitelist, monkeypatch
) -> None:
    """The hub's endpoint refuses the first try after 3 s and the second at once (restarting),
    then takes 5 s to resolve the run, within a try's 9 s. The third try is answered: the run
    is resolved over the endpoint, not on the queue. (The SDK's start-to-close timer of the
    first try, left running, sdk-rust#1454, cut the third about 4 s in, 10 s after the first
    began, and the run went to the hub's queue. The third keeps 4 s to spare on a busy
    machine.)"""
    from activities.direct import Refused

    original = DirectServer.answer
    tries: list[float] = []

    async def answer(self: DirectServer, body: bytes) -> bytes:
        if envelope_of(body)[0] != HUB:
            return await original(self, body)
        tries.append(asyncio.get_running_loop().time())
        if len(tries) == 1:
            await asyncio.sleep(3)
        if len(tries) <= 2:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "restarting")
        await asyncio.sleep(5)
        return await original(self, body)

    monkeypatch.setattr(DirectServer, "answer", answer)
    await register_fixture(pool, f"{BPF}.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await _waiting(settings, client)
        history = await handle.fetch_history()
        await handle.terminate()
    assert len(tries) == 3, [round(t - tries[0], 2) for t in tries]
    assert calls_to_the_hub(history) == [("hub.resolve", True)]


async def test_the_hubs_refusal_over_its_endpoint_ends_the_run_as_on_the_queue(
    client, pool, settings, catalog, live_whitelist, monkeypatch
) -> None:
    """The hub refuses a run over its endpoint (its final word, sealed): the run does not go to
    the hub's queue for another answer; it ends as a run the hub refused on its queue ends,
    'invalid', saying it could not start."""
    import activities.direct as direct

    async def refuse(hub: Any, prefix: str, call: DirectResolve) -> DirectResolved:
        return DirectResolved(
            workflow_id=call.workflow_id,
            run_id=call.run_id,
            failure=direct._failure(Failure.MALFORMED_START.error("refused by the hub")),
        )

    monkeypatch.setattr(direct, "resolve_run", refuse)
    await register_fixture(pool, f"{BPF}.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await RenkeiClient(client, settings).start(
            start(BPF, "city-minato", _subject(settings), trigger="portal")
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        history = await handle.fetch_history()
        described = await handle.describe()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "MalformedStart"
    assert "the flow could not start" in cause.message
    assert described.typed_search_attributes.get(sa.STATUS) == "invalid"
    assert calls_to_the_hub(history) == [("hub.resolve", True)]


async def test_copies_of_a_request_in_flight_take_no_place_of_its_executors_share(
    client, pool, settings, catalog, live_whitelist, monkeypatch
) -> None:
    """Someone on the network sends copies of city-minato's captured request while the hub
    serves it, to spend city-minato's share of the endpoint (here one place): each copy waits
    for the one reply instead, and the hub serves the request once."""
    import activities.direct as direct

    monkeypatch.setattr(direct, "PER_PARTY", 1)
    release = asyncio.Event()
    served: list[str] = []
    original = direct.resolve_run

    async def slow(hub: Any, prefix: str, call: DirectResolve) -> DirectResolved:
        served.append(call.run_id)
        await release.wait()
        return await original(hub, prefix, call)

    monkeypatch.setattr(direct, "resolve_run", slow)
    minato = _codec(client, pool, settings, "city-minato")
    wid = workflow_id(BPF, "city-minato", f"case-{uuid.uuid4().hex[:10]}")
    call = DirectResolve(workflow_id=wid, run_id=str(uuid.uuid4()), request=_request(settings))
    body = await _sealed(minato, settings.task_queue_prefix, HUB, wid, call)
    async with workers(client, pool, settings, catalog, live_whitelist):
        address = endpoints_of(settings)[HUB]
        sent = [asyncio.create_task(_send(address, body)) for _ in range(4)]
        for _ in range(200):
            if served:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the copies have arrived
        assert not any(t.done() for t in sent)  # none refused: each waits for the reply
        release.set()
        replies = await asyncio.gather(*sent)
    assert len(set(replies)) == 1 and served == [call.run_id]


async def test_a_run_whose_worker_does_not_know_the_hubs_endpoint_asks_on_the_queue_at_once(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """A control worker not told where the hub's endpoint is (its ready line says so): asking
    again would change nothing until it is configured, so its runs ask on the hub's queue after
    the one try, not three."""
    await register_fixture(pool, f"{BPF}.yaml")
    async with workers(client, pool, settings, catalog, live_whitelist):
        endpoints = endpoints_of(settings)
        real = endpoints.pop(HUB)
        try:
            handle = await _waiting(settings, client)
        finally:
            endpoints[HUB] = real
        history = await handle.fetch_history()
        await handle.terminate()
    assert calls_to_the_hub(history) == [("hub.resolve", True), ("hub.resolve", False)]
    tries = [
        e.marker_recorded_event_attributes
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    import json

    assert json.loads(tries[0].details["data"].payloads[0].data)["attempt"] == 1
