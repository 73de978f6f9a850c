"""The anatomy bench builds the history it names: each part of a renkei 1-query flow's history
on a plain workflow, one at a time or all at once."""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.anatomy import (
    LARGE,
    LOCAL,
    MEMO,
    PATCH,
    RESOLVED_BYTES,
    START,
    UPSERTS,
    VARIANTS,
    Anatomy,
    answer,
    local,
    start_attributes,
)


async def _history(env: WorkflowEnvironment, features: int) -> list[HistoryEvent]:
    tq = f"anatomy-test-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=tq, workflows=[Anatomy], activities=[answer, local]):
        h = await env.client.start_workflow(
            Anatomy.run,
            features,
            id=f"anatomy-test-{uuid.uuid4()}",
            task_queue=tq,
            search_attributes=start_attributes() if features & START else None,
            memo={"fingerprint": "0" * 64} if features & MEMO else None,
        )
        assert await h.result() == "done"
        return list((await h.fetch_history()).events)


async def test_plain_has_none_of_the_parts_and_all_has_each(
    temporal_env: WorkflowEnvironment,
) -> None:
    def count(events: list[HistoryEvent], kind: int) -> int:
        return sum(1 for e in events if e.event_type == kind)

    plain = await _history(temporal_env, 0)
    every = await _history(
        temporal_env, VARIANTS["all of these (renkei's history, without renkei)"]
    )
    assert count(plain, EventType.EVENT_TYPE_MARKER_RECORDED) == 0
    assert count(plain, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 0
    # the patch's marker and the local activity's; the SDK's upsert for the patch and two more
    assert count(every, EventType.EVENT_TYPE_MARKER_RECORDED) == 2
    assert count(every, EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == 3
    started = every[0].workflow_execution_started_event_attributes
    assert len(started.search_attributes.indexed_fields) == 4
    assert list(started.memo.fields) == ["fingerprint"]
    assert not plain[0].workflow_execution_started_event_attributes.search_attributes.indexed_fields
    completed = [e for e in every if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
    [result] = completed[0].activity_task_completed_event_attributes.result.payloads
    assert len(result.data) >= RESOLVED_BYTES
    assert {PATCH, LOCAL, UPSERTS, LARGE, START, MEMO} <= set(VARIANTS.values())
