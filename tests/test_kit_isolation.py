"""The conformance kit's runs are kept apart from the real ones: `renkei runs`, billing, the
executors' outboxes and the metrics leave them out, and a real run cannot pass for one."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from renkei.app import billing
from renkei.app.citizen import answer
from renkei.app.kit import run_scenarios, scenarios_for
from renkei.contracts.messages import Waiting
from renkei.kernel import keys, records
from renkei.kernel.settings import Settings
from whitelist.decide import JST
from workers.plugin import connect
from workflows.interpreter import KIT_CLOCK

from .conftest import free_port
from .helpers import code, pick, sdk, start, workers

BPF = "child-allowance-portal-application"


async def _until_waiting(handle, step: str) -> None:
    while True:  # polled until the flow says it waits (the test's own timeout bounds it)
        found = await handle.query("renkei.waiting", result_type=list[Waiting])
        if any(w.step == step for w in found):
            return
        await asyncio.sleep(0.05)


async def _invoices(pool: asyncpg.Pool, month: str) -> dict[str, list[tuple[object, ...]]]:
    """Every org's invoice lines for ``month``, as billing computes them from the records."""
    found = await billing.compute(pool, month, billing.load_model())
    return {
        org: [
            (line.kind, line.bpf, line.info, line.charged, sorted(line.not_charged.items()))
            for line in body.lines
        ]
        for org, body in found.items()
    }


def _billed(invoices: dict[str, list[tuple[object, ...]]]) -> int:
    return sum(int(line[3]) for lines in invoices.values() for line in lines if line[0] == "query")  # type: ignore[call-overload]


async def test_kit_runs_are_left_out_of_runs_billing_and_outboxes_and_a_real_run_cannot_hide(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    month = dt.datetime.now(JST).strftime("%Y-%m")
    before = await _invoices(pool, month)
    report = await run_scenarios(
        client, pool, settings, catalog, live_whitelist, BPF, None, scenarios_for(BPF)
    )
    assert report.passed, report.summary()
    kit_ids = {s.workflow_id for s in report.scenarios}
    # Each is a kit run: its history holds the kit's patch (which a run in operation never does:
    # tests/test_lifecycle.py).
    for wid in kit_ids:
        markers = [
            e.marker_recorded_event_attributes.SerializeToString()
            async for e in client.get_workflow_handle(wid).fetch_history_events()
            if e.HasField("marker_recorded_event_attributes")
        ]
        assert any(KIT_CLOCK.encode() in m for m in markers)
    # The kit's linkages were recorded (the records are the law's) ...
    for wid in kit_ids:
        assert await records.query(pool, workflow_id=wid)
    # ... but billed to nobody, and its reminders are not the executor's to send.
    after = await _invoices(pool, month)
    assert after == before
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM hub.reminders WHERE workflow_id = ANY($1)", list(kit_ids)
        )
        == 0
    )

    # A real run (a hub that is not the kit's) started with the kit's mark: the flow drops it.
    marking = settings.model_copy(update={"kit_clock": True})  # its client marks the start
    h = pick(settings, lambda h: h.municipality == "city-shibuya")
    async with workers(client, pool, settings, catalog, live_whitelist):
        handle = await sdk(client, marking).start(
            start(
                BPF,
                "city-minato",
                code(settings, "city-minato", h.members[0]),
                trigger="portal",
                inputs={"previous_municipality": "city-shibuya"},
            )
        )
        await _until_waiting(handle, "consent")
        # the consent is the citizen's own (by: citizen): given in their portal session
        portal = keys.load(settings).signer()
        await answer(
            sdk(client, settings),
            portal,
            handle.id,
            "consent",
            {"agree": True},
            code(settings, "city-minato", h.members[0]),
        )
        await handle.result()
    # Billed: its one query to another body (city-shibuya's local tax); its look-up in
    # city-minato's own register passes between no two bodies and is billed to no one.
    assert _billed(await _invoices(pool, month)) == _billed(after) + 1

    runs = sdk(client, settings)
    while True:  # visibility follows the server's writes: polled until both show
        real = {r.workflow_id for r in await runs.runs(bpf=BPF, limit=1000)}
        kit = {r.workflow_id for r in await runs.runs(bpf=BPF, conformance=True, limit=1000)}
        if handle.id in real and kit_ids <= kit:
            break
        await asyncio.sleep(0.1)
    assert not kit_ids & real
    assert handle.id not in kit


async def test_the_kit_adds_nothing_to_the_metrics(
    client: Client, pool: asyncpg.Pool, settings: Settings, catalog, live_whitelist
) -> None:
    """Its task queues are named for one run: as labels they would grow without bound."""
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    metered = await connect(settings, client.service_client.config.target_host, runtime=runtime)
    report = await run_scenarios(
        metered, pool, settings, catalog, live_whitelist, BPF, None, scenarios_for(BPF)
    )
    assert report.passed, report.summary()
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    lines = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    assert not [line for line in lines if "conformance-" in line]
    assert not [line for line in lines if line.startswith("renkei_linkage_decisions")]
