"""The conformance kit over the direct channel (``RENKEI_LINKAGE_TRANSPORT=direct``).

Over the direct channel a linkage is a local activity of the flow: the server shows no activity
in flight, and while a stub is parked on the kit's clock the worker holds the flow's workflow
task open. The kit must still see when the flows are quiet (its control workers tell it:
:mod:`renkei.app.kit.watch`), tell each linkage's end from the run's markers, and pass the
scenarios it passes over the providers' queues, with every linkage asked directly.
"""

from __future__ import annotations

import asyncpg
import pytest
from temporalio.client import Client

from renkei.app.kit import run_scenarios, scenarios_for
from renkei.app.kit.runner import _direct_outcome
from renkei.app.kit.watch import FlowWatch
from renkei.contracts.names import is_act_activity, is_query_activity
from renkei.kernel.settings import Settings

# Parallel lanes racing a delayed provider against a failing one (a flow that fails, so the kit
# reads its linkages' ends from the history), and the demo's preview flow (answers, a refused
# answer, a 30-day timeout on the kit's clock).
RACY = ["child-allowance-check", "child-allowance-portal-application"]


async def _kit(client, pool, settings, catalog, live_whitelist, bpf: str, transport: str):
    return await run_scenarios(
        client,
        pool,
        settings,
        catalog,
        live_whitelist,
        bpf,
        None,
        scenarios_for(bpf),
        transport=transport,
    )


async def test_the_kit_still_passes_over_the_providers_queues(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """The kit's watch of its flows changes nothing over the queues (an operator's choice, and
    the runs in flight there)."""
    report = await _kit(client, pool, settings, catalog, live_whitelist, RACY[0], "queue")
    assert report.passed, report.summary()


@pytest.mark.parametrize("bpf", RACY)
async def test_the_kit_passes_over_the_direct_channel_asking_every_linkage_directly(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    bpf: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kit reads its flows in the process, as their worker answers (a query through the
    # server would wait for the task the worker holds open while a stub is parked).
    read_here: list[str] = []
    reading = FlowWatch.read

    def counted(watch: FlowWatch, workflow_id: str, query: str):
        found = reading(watch, workflow_id, query)
        if found is not None:
            read_here.append(query)
        return found

    monkeypatch.setattr(FlowWatch, "read", counted)
    report = await _kit(client, pool, settings, catalog, live_whitelist, bpf, "direct")
    assert report.passed, report.summary()
    assert "renkei.kit.clock" in read_here
    if any(s.responses for s in scenarios_for(bpf).scenarios):  # answers given when awaited
        assert "renkei.waiting" in read_here
    asked = 0
    for s in report.scenarios:
        history = await client.get_workflow_handle(s.workflow_id).fetch_history()
        over_queues = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and (
                is_query_activity(e.activity_task_scheduled_event_attributes.activity_type.name)
                or is_act_activity(e.activity_task_scheduled_event_attributes.activity_type.name)
            )
        ]
        assert not over_queues, f"{s.name}: linkages on the providers' queues: {over_queues}"
        ends = dict(
            found
            for e in history.events
            if e.HasField("marker_recorded_event_attributes")
            and (found := _direct_outcome(e.marker_recorded_event_attributes)) is not None
        )
        # every linkage the hub permitted was asked directly, and ended as the kit reported
        for x in s.linkages:
            if x.outcome != "denied" and (x.outcome != "cancelled" or x.step in ends):
                assert ends.get(x.step) == x.outcome, f"{s.name}: {x.step} ended {ends}"
        asked += len(ends)
    assert asked, "no linkage went over the direct channel"
