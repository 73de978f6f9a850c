"""The workers run their flows outside Temporal's workflow sandbox; the sandbox stays the check.

- A worker on renkei's client runs a workflow unsandboxed by default (a call to the machine's
  clock goes through), and in the sandbox on request (``RENKEI_WORKFLOW_SANDBOX``: the same
  call fails the workflow task, naming it).
- renkei's replay of recorded histories (``workers.plugin.replayer``, what
  ``tests/test_replay.py`` replays every release through) runs in the sandbox whatever the
  workers do: a run that called the machine's clock or drew a random number fails its replay,
  naming the call; one that asked the workflow's own clock replays.
- Unsandboxed, every run in a worker shares the workflow modules: runs of two definitions with
  the same step ids, interleaved on one control worker, each see only their own inputs,
  answers, previews and results.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from renkei.contracts.messages import FlowResult, Response, Waiting
from renkei.kernel.settings import Settings
from workers.plugin import HUB, party_client, replayer

from .helpers import code, households, register_fixture, sdk, start, workers
from .nondeterministic import MachineClock, RandomNumber, WorkflowClock

SANDBOX_LOG = "temporalio.worker.workflow_sandbox._restrictions"


def _runner(client: Client, settings: Settings, *, sandboxed: bool) -> Client:
    """A client on ``client``'s connection whose workers run flows as ``sandboxed`` says
    (``RENKEI_WORKFLOW_SANDBOX``), whatever the suite's own settings say."""
    return party_client(client, settings.model_copy(update={"workflow_sandbox": sandboxed}), [HUB])


async def _ran(client: Client, settings: Settings, flow: type) -> WorkflowHandle[Any, Any]:
    """``flow`` run to its end on a worker that runs flows as renkei's do by default."""
    own = _runner(client, settings, sandboxed=False)
    queue = f"{settings.task_queue_prefix}.determinism"
    wid = f"determinism-{uuid.uuid4().hex[:12]}"
    async with Worker(own, task_queue=queue, workflows=[flow]):
        await own.execute_workflow(flow.run, id=wid, task_queue=queue)  # type: ignore[attr-defined]
    return own.get_workflow_handle(wid)


async def test_workers_run_flows_unsandboxed_by_default(client: Client, settings: Settings) -> None:
    assert Settings.model_fields["workflow_sandbox"].default is False
    handle = await _ran(client, settings, MachineClock)
    assert isinstance(await handle.result(), str)  # nothing refused the machine's clock


async def test_a_worker_runs_flows_in_the_sandbox_on_request(
    client: Client, settings: Settings
) -> None:
    own = _runner(client, settings, sandboxed=True)
    queue = f"{settings.task_queue_prefix}.determinism"
    handle = await own.start_workflow(
        MachineClock.run, id=f"determinism-{uuid.uuid4().hex[:12]}", task_queue=queue
    )
    try:
        async with Worker(own, task_queue=queue, workflows=[MachineClock]):
            failed = None
            for _ in range(300):  # until the worker has taken the first workflow task
                events = [e async for e in handle.fetch_history_events()]
                failed = next(
                    (
                        e
                        for e in events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
                    ),
                    None,
                )
                if failed is not None:
                    break
                await asyncio.sleep(0.1)
        assert failed is not None, "the sandboxed worker never failed the workflow task"
        failure = failed.workflow_task_failed_event_attributes.failure
        error = await own.data_converter.decode_failure(failure)  # sealed, as every failure
        assert "datetime.datetime.now" in str(error), error
    finally:
        await handle.terminate("test over")


@pytest.mark.parametrize(
    ("flow", "restricted"),
    [(MachineClock, "datetime.datetime.now"), (RandomNumber, "random.random")],
)
async def test_the_replay_refuses_a_call_that_is_not_deterministic(
    client: Client,
    settings: Settings,
    flow: type,
    restricted: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The run completed on an unsandboxed worker; renkei's replay of its history fails it. (The
    failure itself is sealed, as every failure: its type says why, the sandbox's log what.)"""
    handle = await _ran(client, settings, flow)
    history = await handle.fetch_history()
    with caplog.at_level(logging.WARNING, logger=SANDBOX_LOG):
        replayed = await replayer(settings, [flow]).replay_workflow(
            history, raise_on_replay_failure=False
        )
    assert replayed.replay_failure is not None, f"{flow.__name__} replayed"
    assert "RestrictedWorkflowAccessError" in str(replayed.replay_failure)
    said = [r.getMessage() for r in caplog.records if r.name == SANDBOX_LOG]
    assert any(restricted in m for m in said), said


async def test_the_replay_takes_the_workflows_own_clock(client: Client, settings: Settings) -> None:
    handle = await _ran(client, settings, WorkflowClock)
    history = await handle.fetch_history()
    replayed = await replayer(settings, [WorkflowClock]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None, replayed.replay_failure


async def _waiting(handle: WorkflowHandle[Any, Any], step: str) -> Waiting:
    for _ in range(300):
        found: list[Waiting] = await handle.query("renkei.waiting", result_type=list[Waiting])
        if found:
            [waiting] = found
            assert waiting.step == step
            return waiting
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never waited at {step}")


async def test_runs_of_two_definitions_interleaved_on_one_worker_keep_their_own_state(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "isolation-a.yaml")
    await register_fixture(pool, "isolation-b.yaml")
    shibuya = [h.members[0] for h in households(settings) if h.municipality == "city-shibuya"]
    # three residents with incomes of their own
    people = list({p.taxable_income: p for p in shibuya}.values())[:3]
    assert len(people) == 3

    def subject(i: int) -> str:
        return code(settings, "city-minato", people[i])

    async with workers(client, pool, settings, catalog, live_whitelist):
        rc = sdk(client, settings)
        # city-minato's one control worker takes all three: a, b, then a again
        first = await rc.start(
            start("isolation-a", "city-minato", subject(0), inputs={"label": "one"})
        )
        other = await rc.start(
            start("isolation-b", "city-minato", subject(1), inputs={"count": 21})
        )
        again = await rc.start(
            start("isolation-a", "city-minato", subject(2), inputs={"label": "two"})
        )
        a1, b, a2 = (
            await _waiting(first, "answer"),
            await _waiting(other, "answer"),
            await _waiting(again, "answer"),
        )
        assert (a1.for_, b.for_, a2.for_) == ("confirmation-a", "confirmation-b", "confirmation-a")
        assert a1.fields["value"]["type"] == a2.fields["value"]["type"] == "integer"
        assert b.fields["value"]["type"] == "string"
        assert a1.preview["tax"]["taxable_income"] == people[0].taxable_income
        assert a2.preview["tax"]["taxable_income"] == people[2].taxable_income
        assert b.preview == {}  # b asks after its answer
        # answered in another order than started, each while the others wait in the worker
        await again.execute_update("renkei.respond", Response(step="answer", payload={"value": 2}))
        await other.execute_update(
            "renkei.respond", Response(step="answer", payload={"value": "from b"})
        )
        await first.execute_update("renkei.respond", Response(step="answer", payload={"value": 1}))
        results: list[FlowResult] = [await h.result() for h in (first, other, again)]
    assert [r.outcome for r in results] == ["completed"] * 3
    assert [r.result for r in results] == [
        {"flow": "a", "label": "one", "income": people[0].taxable_income, "value": 1},
        {"flow": "b", "count": 42, "income": people[1].taxable_income, "value": "from b"},
        {"flow": "a", "label": "two", "income": people[2].taxable_income, "value": 2},
    ]
