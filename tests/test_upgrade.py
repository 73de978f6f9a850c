"""Upgrade without breaking flows in flight: a flow started the way runs were started before
channels and executor-side control (the shared control queue, every payload under the shared
ring, the hub's activities local to the control worker) waits for the citizen's consent; the
workers are replaced by this release's; the consent is given through this release's SDK, and
the flow completes on its old path, with exactly one record per party."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid

import pytest
from temporalio.client import Client
from temporalio.common import HeaderCodecBehavior
from temporalio.plugin import SimplePlugin

from activities.agencies import SAMPLE_AGENCIES
from renkei.contracts.names import control_queue, workflow_id
from renkei.kernel import keys, records
from renkei.kernel.codec import ENCODING, data_converter
from workers.agency import agency_worker
from workers.control import legacy_control_worker
from workers.plugin import PLUGIN_NAME, workflow_runner

from .helpers import code, pick, register_fixture, sdk, start, workers


def _old_client(client: Client, settings) -> Client:
    """A client as every process had before: the shared payload ring, nothing else (its
    workers ran their flows in the sandbox)."""
    return Client(
        client.service_client,
        namespace=client.namespace,
        plugins=[
            SimplePlugin(
                PLUGIN_NAME,
                data_converter=data_converter(keys.load(settings).codec),
                workflow_runner=workflow_runner(sandboxed=True),
            )
        ],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
    )


@contextlib.asynccontextmanager
async def _old_workers(old: Client, pool, settings, catalog, whitelist):
    async with contextlib.AsyncExitStack() as stack:
        # The old release took every run on the shared queue.
        before = settings.model_copy(
            update={"legacy_runs_before": dt.datetime(9999, 1, 1, tzinfo=dt.UTC)}
        )
        await stack.enter_async_context(
            legacy_control_worker(old, pool, before, catalog, whitelist)
        )
        for org in SAMPLE_AGENCIES:
            await stack.enter_async_context(
                agency_worker(old, pool, settings, catalog, org, whitelist)
            )
        yield


async def test_a_flow_started_before_the_upgrade_completes_after_it(
    client, pool, settings, catalog, live_whitelist
) -> None:
    await register_fixture(pool, "consent-probe.yaml")
    slow = settings.model_copy(update={"test_time_scale": 1e-4})  # 30 days ≈ 4 minutes
    person = pick(settings, lambda h: h.municipality == "city-shibuya").members[0]
    flow = start("consent-probe", "city-minato", code(settings, "city-minato", person))
    flow = flow.model_copy(update={"trigger": "portal", "case_ref": f"up-{uuid.uuid4().hex[:8]}"})
    wid = workflow_id(flow.bpf, flow.executor, flow.case_ref)
    old = _old_client(client, slow)
    async with _old_workers(old, pool, slow, catalog, live_whitelist):
        await old.start_workflow(
            flow.bpf, flow, id=wid, task_queue=control_queue(slow.task_queue_prefix)
        )
        rc = sdk(old, slow)
        for _ in range(400):  # the linkage ran on the old path; the flow waits for consent
            if await rc.waiting(wid):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the flow never waited")
    # The upgrade: every worker replaced by this release's, the SDK too; the hub's process
    # serves the runs started before it on the shared queue.
    slow = slow.model_copy(update={"legacy_runs_before": dt.datetime.now(dt.UTC)})
    async with workers(client, pool, slow, catalog, live_whitelist):
        ack = await sdk(client, slow).respond(wid, "consent", {"agree": True})
        assert ack.step == "consent"
        result = await sdk(client, slow).result(wid)
    assert result.outcome == "completed" and isinstance(result.result["income"], int)
    history = await client.get_workflow_handle(wid).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # still the old path: no hub activity on a queue, every payload of the run under the ring
    assert [a.activity_type.name for a in scheduled] == ["query.local-tax"]
    assert all(p.metadata["encoding"] == ENCODING for a in scheduled for p in a.input.payloads)
    kept = await records.query(pool, workflow_id=wid)
    assert sorted(r.keeper for r in kept) == sorted(["city-minato", "hub", "city-shibuya"])


async def test_no_new_run_is_taken_on_the_shared_queue_after_the_upgrade(
    client, pool, settings, catalog, live_whitelist
) -> None:
    """Every org's key file still carries the old ring: kyokai-kenpo starts a new run on the
    shared queue, under the ring, as city-minato. The hub's process serves that queue only for
    runs started before the upgrade: this one is refused before anything is asked."""
    from temporalio.client import WorkflowFailureError

    from renkei.contracts.messages import FlowResult
    from tests.helpers import allowance_check

    ring = keys.load_org(settings, "kyokai-kenpo").codec
    assert ring is not None
    rogue = Client(
        client.service_client, namespace=client.namespace, data_converter=data_converter(ring)
    )
    upgraded = settings.model_copy(
        update={"legacy_runs_before": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)}
    )
    flow = allowance_check(settings)
    async with workers(client, pool, upgraded, catalog, live_whitelist):
        handle = await rogue.start_workflow(
            flow.bpf,
            flow,
            id=workflow_id(flow.bpf, flow.executor, flow.case_ref),
            task_queue=control_queue(settings.task_queue_prefix),
            result_type=FlowResult,
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
    assert await records.query(pool, workflow_id=handle.id) == []
