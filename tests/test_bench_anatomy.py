"""The anatomy bench builds the histories it names: each part of a renkei 1-query flow's and a
waiting flow's history on a plain workflow, alone or all at once, the hub's resolve an activity
or a local one; and a waiting round measures only flows that waited."""

from __future__ import annotations

import asyncio
import functools
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.anatomy import (
    HUB_LOCAL,
    HUB_OVER_DIRECT,
    MEMO,
    PATCH,
    RENKEI_1Q,
    RESOLVED_BYTES,
    START,
    WAIT_VARIANTS,
    Anatomy,
    AnatomyWait,
    Started,
    WaitSide,
    _wait_round,
    answer,
    local,
    start_attributes,
)


def count(events: list[HistoryEvent], kind: int) -> int:
    return sum(1 for e in events if e.event_type == kind)


async def _start(client: Client, tq: str, features: int, waiting: bool) -> WorkflowHandle:  # type: ignore[type-arg]
    return await client.start_workflow(
        "anatomy-wait" if waiting else "anatomy",
        features,
        id=f"anatomy-test-{uuid.uuid4()}",
        task_queue=tq,
        search_attributes=start_attributes() if features & START else None,
        memo={"fingerprint": "0" * 64} if features & MEMO else None,
    )


async def _history(env: WorkflowEnvironment, features: int) -> list[HistoryEvent]:
    tq = f"anatomy-test-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=tq, workflows=[Anatomy], activities=[answer, local]):
        h = await _start(env.client, tq, features, waiting=False)
        assert await h.result() == "done"
        return list((await h.fetch_history()).events)


def _answers(events: list[HistoryEvent]) -> list[bytes]:
    """The hub's stand-in answers: an activity's result, or a local activity's marker."""
    found = [
        e.activity_task_completed_event_attributes.result.payloads[0].data
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]
    found += [
        e.marker_recorded_event_attributes.details["result"].payloads[0].data
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    return [d for d in found if len(d) >= RESOLVED_BYTES]


async def test_renkeis_history_has_each_part_and_the_direct_hub_no_activity(
    temporal_env: WorkflowEnvironment,
) -> None:
    plain = await _history(temporal_env, 0)
    ours = await _history(temporal_env, RENKEI_1Q)
    direct = await _history(temporal_env, RENKEI_1Q | HUB_LOCAL)
    patched = await _history(temporal_env, PATCH)
    assert count(plain, EventType.EVENT_TYPE_MARKER_RECORDED) == 0
    assert count(plain, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 0
    assert not plain[0].workflow_execution_started_event_attributes.search_attributes.indexed_fields
    # renkei's as this release writes it: the linkage's marker, one upsert, no patch marker
    assert count(ours, EventType.EVENT_TYPE_MARKER_RECORDED) == 1
    assert count(ours, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 1
    assert count(ours, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
    started = ours[0].workflow_execution_started_event_attributes
    assert len(started.search_attributes.indexed_fields) == 4
    assert list(started.memo.fields) == ["fingerprint"]
    assert len(_answers(ours)) == 1
    # the hub over a direct channel: its answer in a marker, no activity, one task fewer
    assert count(direct, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 0
    assert count(direct, EventType.EVENT_TYPE_MARKER_RECORDED) == 2
    assert len(_answers(direct)) == 1
    assert count(direct, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1
    assert count(ours, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 2
    # a run from before: a patch marker and the SDK's upsert with it
    assert count(patched, EventType.EVENT_TYPE_MARKER_RECORDED) == 1
    assert count(patched, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 1


async def test_the_waiting_histories_and_a_round_of_flows_that_did_not_wait(
    temporal_env: WorkflowEnvironment,
) -> None:
    client = temporal_env.client
    tq = f"anatomy-wait-test-{uuid.uuid4().hex[:8]}"

    def server_cpu() -> float:  # a clock stands in: the round only needs it to go quiet
        return 0.0

    async def too_early() -> Started:  # its answer comes with its start: it never waits
        h = await client.start_workflow(
            AnatomyWait.run,
            0,
            id=f"anatomy-test-{uuid.uuid4()}",
            task_queue=tq,
            start_signal="answer",
        )
        return (lambda: h.signal(AnatomyWait.answer_signal)), h.result

    async with Worker(client, task_queue=tq, workflows=[AnatomyWait], activities=[answer]):
        histories = {}
        for name in (
            "plain: waits for a signal (30-day timeout)",
            "all of these, the activity's answer 2.8 KB (renkei's history, without renkei)",
            HUB_OVER_DIRECT,
        ):
            h = await _start(client, tq, WAIT_VARIANTS[name], waiting=True)
            await _waiting(h)
            ready = WaitSide(functools.partial(_ready, h), waited=lambda rs: all(rs))
            assert await _wait_round(server_cpu, ready, 1) == (0.0, 0.0)
            histories[name] = list((await h.fetch_history()).events)
        plain, ours, direct = histories.values()
        for events in (plain, ours, direct):  # each waited on its timer, then was answered
            assert count(events, EventType.EVENT_TYPE_TIMER_STARTED) == 1
            assert count(events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == 1
        assert count(plain, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 0
        assert count(plain, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 0
        assert count(ours, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
        assert count(ours, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 2
        assert len(_answers(ours)) == 1
        assert count(direct, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 0
        assert count(direct, EventType.EVENT_TYPE_MARKER_RECORDED) == 1
        assert len(_answers(direct)) == 1

        with pytest.raises(RuntimeError, match="resumed before it waited"):
            await _wait_round(
                server_cpu, WaitSide(too_early, waited=lambda rs: all(r is True for r in rs)), 2
            )


async def _waiting(h: WorkflowHandle) -> None:  # type: ignore[type-arg]
    """Until the flow waits: its timer started (a busy machine takes its time)."""
    for _ in range(600):
        events = (await h.fetch_history()).events
        if count(list(events), EventType.EVENT_TYPE_TIMER_STARTED):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the flow never began to wait")


async def _ready(h: WorkflowHandle) -> Started:  # type: ignore[type-arg]
    """A flow already started: resumed and awaited by the round."""
    return (lambda: h.signal(AnatomyWait.answer_signal)), h.result
