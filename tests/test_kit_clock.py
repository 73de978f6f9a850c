"""The conformance kit's clock: the same verdict on a busy machine as on an idle one, and no run
but a kit run takes it."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError

from renkei.app.kit import Report, ScenarioSet, run_scenarios, scenarios_for
from renkei.contracts.failures import Failure
from renkei.contracts.messages import (
    Acknowledged,
    FlowResult,
    KitAdvance,
    KitClock,
    Response,
    Waiting,
)
from renkei.kernel.settings import Settings

from .helpers import code, pick, register_fixture, sdk, start, workers

# The demo's preview flow (answers, a refused answer, a 30-day timeout) and a flow whose parallel
# lanes race a delayed provider against a failing one.
RACY = ["child-allowance-portal-application", "child-allowance-check"]


def _burn(stop: Event) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


@contextmanager
def busy_cores() -> Iterator[None]:
    """Every core kept busy by a process spinning, until the block ends."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop,)) for _ in range(multiprocessing.cpu_count())]
    for p in burners:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in burners:
            p.join()


def _verdict(report: Report) -> list[tuple[str, bool, str, list[str], list[str]]]:
    return [
        (
            s.name,
            s.passed,
            s.outcome,
            sorted(f"{x.step}/{x.provider}/{x.outcome}" for x in s.linkages),
            s.problems,
        )
        for s in report.scenarios
    ]


@pytest.mark.parametrize("bpf", RACY)
async def test_the_kit_gives_the_same_verdict_on_a_busy_machine_as_on_an_idle_one(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist, bpf: str
) -> None:
    async def kit() -> Report:
        return await run_scenarios(
            client, pool, settings, catalog, live_whitelist, bpf, None, scenarios_for(bpf)
        )

    idle = await kit()
    assert idle.passed, idle.summary()
    with busy_cores():
        busy = await kit()
    assert busy.passed, busy.summary()
    assert _verdict(busy) == _verdict(idle)


async def _waiting(handle, step: str) -> list[Waiting]:
    while True:  # polled until the flow says it waits (the test's own timeout bounds it)
        found: list[Waiting] = await handle.query("renkei.waiting", result_type=list[Waiting])
        if any(w.step == step for w in found):
            return found
        await asyncio.sleep(0.05)


async def test_a_run_that_is_not_the_kits_refuses_the_kits_clock(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Whoever can write to a flow cannot make its deadline pass: the kit's clock is taken only
    by a run the kit's own hub resolved as a kit run."""
    await register_fixture(pool, "consent-probe.yaml")
    # A test-mode hub that is not the kit's (its runs keep Temporal's timers: a 30-day wait
    # lasts about 4 minutes here).
    slow = settings.model_copy(update={"test_time_scale": 1e-4})
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, slow, catalog, live_whitelist):
        handle = await sdk(client, slow).start(
            start(
                "consent-probe",
                "city-minato",
                code(settings, "city-minato", h.members[0]),
                trigger="portal",
            )
        )
        [w] = await _waiting(handle, "consent")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                "renkei.kit.advance",
                KitAdvance(to=w.deadline.replace(year=w.deadline.year + 1)),
                result_type=KitClock,
            )
        assert Failure.NOT_A_KIT_RUN.caused(refused.value.cause)
        assert "only a conformance-kit run" in str(refused.value.cause)
        # The same name as a signal finds no handler: nothing changes.
        await handle.signal("renkei.kit.advance", KitAdvance(to=w.deadline))
        assert await handle.query("renkei.kit.clock", result_type=KitClock) == KitClock()
        # Still waiting, deadline unmoved: the answer is taken.
        assert await _waiting(handle, "consent") == [w]
        ack = await handle.execute_update(
            "renkei.respond",
            Response(step="consent", payload={"agree": True}),
            result_type=Acknowledged,
        )
        assert ack.step == "consent"
        result: FlowResult = await handle.result()
    assert result.outcome == "completed"
    # The refused update never reached the history.
    events = [e async for e in handle.fetch_history_events()]
    accepted = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert accepted == ["renkei.respond"]


async def test_a_kit_runs_sleeps_end_on_the_kits_clock_not_on_a_timer(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Four months and two days of sleeping pass as the kit moves the clock: no timer runs."""
    await register_fixture(pool, "sleep-probe.yaml")
    scenario_set = ScenarioSet.model_validate(
        {
            "bpf": "sleep-probe",
            "scenarios": [
                {
                    "name": "sleeps, then asks",
                    "executor": "city-minato",
                    "inputs": {"months": 4},
                    "providers": {
                        "city-shibuya": {
                            "local-tax": {
                                "respond": {
                                    "fiscal_year": 2025,
                                    "taxable_income": 3000000,
                                    "municipal_tax": 300000,
                                    "dependents": 0,
                                }
                            }
                        }
                    },
                    "expect": {
                        "outcome": "completed",
                        "result": {"income": 3000000},
                        "linkages": [
                            {
                                "step": "tax",
                                "provider": "city-shibuya",
                                "info": "local-tax",
                                "outcome": "provided",
                            }
                        ],
                    },
                }
            ],
        }
    )
    report = await run_scenarios(
        client, pool, settings, catalog, live_whitelist, "sleep-probe", None, scenario_set
    )
    assert report.passed, report.summary()
    events = [
        e
        async for e in client.get_workflow_handle(
            report.scenarios[0].workflow_id
        ).fetch_history_events()
    ]
    assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    moves = [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        == "renkei.kit.advance"
    ]
    assert len(moves) == 2  # the end of each sleep
