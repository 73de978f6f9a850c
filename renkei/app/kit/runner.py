"""Running a BPF version's scenarios through the real interpreter, hub and gates.

The kit runs every scenario in test mode on task queues of its own, with the real interpreter,
the real hub and the real whitelist interceptors, and stub providers in place of the orgs'
systems; and checks the outcome, the result, the exact linkages, that every party kept its
record, that nothing outside the whitelist was attempted, and that every answer matches its info
item's schema. Each scenario's subjects are fresh and enrolled at every org; the respondent's
scripted answers are given when the flow says it waits for them (its ``renkei.waiting`` query).

Time is the kit's (:mod:`renkei.app.kit.clock`): the kit's hub resolves every run on the kit's
clock, so a wait nobody answers times out, a sleep ends and a stub's delay passes only when the
kit moves the clock, and it does so only when the flows are quiet. The verdict does not depend
on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, ServiceClient

from renkei.app.client import RenkeiClient, ResponseRefused
from renkei.app.kit.clock import StubClock, next_event, read
from renkei.app.kit.report import Report, ScenarioResult
from renkei.app.kit.scenarios import (
    Expectation,
    ExpectedLinkage,
    Scenario,
    ScenarioSet,
    ScriptedResponse,
)
from renkei.app.kit.stubs import Stubs
from renkei.bpf import registry
from renkei.bpf.models import BpfDefinition
from renkei.contracts.failures import Failure
from renkei.contracts.messages import FlowResult, StartFlow, Waiting
from renkei.contracts.names import DIRECT_LINKAGE, workflow_id
from renkei.kernel import attest, keys, records, telemetry
from renkei.kernel.pseudonyms import Pseudonyms, derive_code
from renkei.kernel.settings import Settings
from whitelist.models import Catalog
from whitelist.store import LiveWhitelist
from workers.assembly import running_workers
from workers.plugin import service_config

# How often the kit looks whether a flow waits or is quiet (its state is remote: polled, as a
# portal would). Only how soon the kit notices depends on it, never what it decides.
POLL_S = 0.05
# The marker a local activity's end leaves in the flow's history (the SDK's own name).
LOCAL_ACTIVITY_MARKER = "core_local_activity"
# A scenario still running after this long is stuck (a bug of the kit or the flow): it fails.
STUCK_S = 600.0


async def run_scenarios(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    whitelist: LiveWhitelist,
    bpf: str,
    version: int | None,
    scenario_set: ScenarioSet,
    *,
    on_run: Callable[[str, str], Awaitable[None]] | None = None,
    transport: Literal["queue", "direct"] = "queue",
) -> Report:
    """Run every scenario of ``scenario_set`` against ``bpf`` (test mode, own task queues).

    ``transport``: how the scenarios' linkages reach the stubs. Through the providers' queues by
    default, whatever the platform's: a verdict is about the definition, and the transports are
    the platform's own tests'. Over the direct channel (``direct``, as operation runs) a parked
    stub holds its flow's workflow task open, and the kit's clock is read by a query that waits
    for that task (the SDK's heartbeat of it, 8 s of the 10 s task timeout): the kit reads a flow
    in the process instead (:meth:`FlowWatch.read`), and a scenario takes a few times as long
    as over the queues (an answer still reaches the flow through the server)."""
    try:
        found = await registry.fetch(pool, bpf, version, "test")
    except registry.DefinitionAltered as err:
        raise LookupError(str(err)) from None
    if found is None:
        raise LookupError(f"{bpf} version {version or 'latest'} is not registered")
    d = found.definition
    kit = settings.model_copy(
        update={
            "mode": "test",
            "task_queue_prefix": f"conformance-{uuid.uuid4().hex[:10]}",
            # waits and sleeps keep their real lengths, on the kit's clock
            "test_time_scale": 1.0,
            "kit_clock": True,
            "linkage_transport": transport,
        }
    )
    hub_key = keys.load(settings).hub_key
    client = await _unmetered(client, settings)
    results: list[ScenarioResult] = []
    for scenario in scenario_set.scenarios:
        subjects = {name: uuid.uuid4() for name in scenario.subjects}
        await Pseudonyms(pool, hub_key).enroll(
            list(subjects.values()),
            [o for o in sorted(catalog.orgs) if not catalog.is_private(o)],  # no code for them
        )

        def code_at(name: str, org: str, subjects: dict[str, uuid.UUID] = subjects) -> str:
            return derive_code(hub_key, org, subjects[name])

        clock = StubClock(dt.datetime.now(dt.UTC))
        stubs = Stubs(scenario, catalog, code_at, clock)
        stubs.check_answers()
        async with running_workers(
            client,
            pool,
            kit,
            catalog,
            whitelist,
            agencies=sorted(catalog.orgs),
            providers=stubs.providers,
            # the kit sees what its control workers do with the flows (a linkage over the
            # direct channel is a local activity, which the server does not show)
            control_plugins=[clock.watch.plugin()],
        ):
            try:
                result = await _run_one(client, pool, kit, d, scenario, stubs, code_at, clock)
            finally:
                clock.release_all()
        if on_run is not None:
            await on_run(scenario.name, result.workflow_id)
        results.append(result)
    return Report(
        bpf=d.bpf,
        version=d.version,
        content_hash=found.content_hash,
        passed=all(r.passed for r in results),
        scenarios=results,
    )


async def _unmetered(client: Client, settings: Settings) -> Client:
    """``client`` on a connection of its own, in a runtime that serves no metrics: the kit's
    workers poll task queues named for one run, which would add label values to the SDK's
    metrics without bound, and its linkages are not the platform's. The connection is made as
    every other (:func:`workers.plugin.service_config`): to the same address, over mutual TLS
    with this process's certificate when the settings name one."""
    quiet = telemetry.runtime(settings.model_copy(update={"metrics_port": None}))
    service = await ServiceClient.connect(
        service_config(settings, client.service_client.config.target_host, quiet)
    )
    config = client.config()
    config["service_client"] = service
    return Client(**config)


async def _run_one(
    client: Client,
    pool: asyncpg.Pool,
    kit: Settings,
    d: BpfDefinition,
    scenario: Scenario,
    stubs: Stubs,
    code_at: Callable[[str, str], str],
    clock: StubClock,
) -> ScenarioResult:
    problems = list(stubs.problems)
    inputs = {
        k: code_at(v[1:], scenario.executor) if isinstance(v, str) and v.startswith("@") else v
        for k, v in scenario.inputs.items()
    }
    kinds = d.trigger_kinds()
    trigger = next((t for t in kinds if t in ("counter", "portal")), kinds[0])
    subject = code_at(scenario.subjects[0], scenario.executor)
    found = uuid.uuid4().hex  # no run of twelve digits: nothing like an individual number
    case_ref = f"conformance-{found[:6]}-{found[6:12]}"
    word = None
    if trigger in ("life-event", "notification"):  # the kit starts it as the platform would
        word = attest.trigger_start(
            keys.load(kit).signer(),
            workflow_id(d.bpf, scenario.executor, case_ref),
            trigger,
            d.bpf,
            scenario.executor,
            subject,
        )
    start = StartFlow(
        bpf=d.bpf,
        version=d.version,
        executor=scenario.executor,
        subject=subject,
        inputs=inputs,
        trigger=trigger,
        case_ref=case_ref,
        attestation=word,
    )
    sdk = RenkeiClient(client, kit)
    handle = await sdk.start(start)
    outcome: str
    flow: FlowResult | None = None
    reason = ""
    given: list[str] = []
    driving = asyncio.create_task(
        _drive(
            client,
            sdk,
            handle.id,
            scenario.responses,
            problems,
            given,
            clock,
            keys.load(kit).signer(),
        )
    )
    try:
        flow = await asyncio.wait_for(handle.result(), timeout=STUCK_S)
        outcome = flow.outcome
        reason = flow.reason or ""
    except WorkflowFailureError as err:
        cause = err.cause
        outcome = "denied" if Failure.LINKAGE_DENIED.caused(cause) else "failed"
        chain: list[str] = []
        node: BaseException | None = cause
        while node is not None:  # the flow's failure, then what caused it, down to the provider
            chain.append(getattr(node, "message", str(node)))
            node = node.__cause__ or getattr(node, "cause", None)
        reason = ": ".join(chain)
    except TimeoutError:
        outcome, reason = "failed", f"still running after {STUCK_S:.0f} s: stuck"
    finally:
        # The driver ends when it sees the flow closed (an answer it gave is acknowledged
        # before it looks again): the verdict counts the answers given.
        if not driving.done():
            with contextlib.suppress(Exception):
                await asyncio.wait({driving}, timeout=STUCK_S)
        if not driving.done():
            driving.cancel()
        [driven] = await asyncio.gather(driving, return_exceptions=True)
        if isinstance(driven, Exception):
            problems.append(f"the kit could not drive the flow: {driven}")
        if len(given) < len(scenario.responses):
            problems.append("the flow ended before every scripted response was given")
    kept = await records.query(pool, workflow_id=handle.id)
    requester = [r for r in kept if r.keeper == scenario.executor]
    if flow is not None:
        observed = [
            ExpectedLinkage(step=x.step, provider=x.provider, info=x.info, outcome=x.outcome)
            for x in flow.linkages
        ]
    else:
        ran = await _activity_outcomes(handle)
        observed = [
            ExpectedLinkage(
                step=r.step,
                provider=r.provider,
                info=r.info,
                outcome="denied" if r.outcome == "denied" else ran.get(r.step, "cancelled"),
            )
            for r in requester
        ]
    exp = scenario.expect
    if outcome != exp.outcome:
        problems.append(f"outcome {outcome} ({reason}), expected {exp.outcome}")
    if exp.reason_contains and exp.reason_contains not in reason:
        problems.append(f"reason {reason!r} does not contain {exp.reason_contains!r}")
    if flow is not None:
        for key, value in exp.result.items():
            if flow.result.get(key) != value:
                problems.append(f"result.{key} = {flow.result.get(key)!r}, expected {value!r}")
    got = sorted(f"{x.step}/{x.provider}/{x.info}/{x.outcome}" for x in observed)
    want = sorted(f"{x.step}/{x.provider}/{x.info}/{x.outcome}" for x in exp.linkages)
    if got != want:
        problems.append(
            f"linkages differ: got {', '.join(got) or 'none'}; expected {', '.join(want) or 'none'}"
        )
    # A linkage the flow cancelled may have been cancelled before it reached the provider: then
    # the provider kept no record, rightly. One that reached the provider's stub has its record
    # (the gate writes it before the provider's code runs).
    unreached = {
        x.step
        for x in observed
        if x.outcome == "cancelled" and not stubs.calls.get((x.provider, x.info), 0)
    }
    problems += _check_records(kept, scenario, exp, unreached)
    return ScenarioResult(
        name=scenario.name,
        passed=not problems,
        outcome=outcome,
        linkages=observed,
        problems=problems,
        workflow_id=handle.id,
    )


async def _drive(
    client: Client,
    sdk: RenkeiClient,
    wid: str,
    script: list[ScriptedResponse],
    problems: list[str],
    given: list[str],
    clock: StubClock,
    portal: Ed25519PrivateKey | None = None,
) -> None:
    """Run the flow's time until it ends: answer each scripted wait, in turn, once the flow says
    it waits there (an answer ``by: citizen`` as the citizen's portal session gives it:
    ``portal``, the platform's key); when the flows are quiet and the next answer is not
    awaited, let the first thing due happen (a stub's answer, a wait's or sleep's end). ``given``
    lists the steps answered so far."""
    from renkei.app.citizen import answer as as_citizen

    todo = list(script)
    handle = client.get_workflow_handle(wid)
    while True:
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return
        if todo:
            try:
                # read as the flow's worker answers it (the server waits for a task the worker
                # holds open for a local activity)
                waits: list[Waiting] = await read(
                    client, wid, clock, "renkei.waiting", list[Waiting]
                )
            except RPCError:
                continue  # it ended meanwhile: seen above on the next turn
            if any(w.step == todo[0].step for w in waits):
                r = todo.pop(0)
                try:
                    if r.by == "citizen" and portal is not None:
                        person = (await sdk.started_with(wid)).subject  # the flow's person
                        await as_citizen(sdk, portal, wid, r.step, r.payload, person)
                    else:
                        await sdk.respond(wid, r.step, r.payload)
                    if r.refused is not None:
                        problems.append(f"response to {r.step} was accepted, expected refused")
                except ResponseRefused as err:
                    if r.refused is None or r.refused not in str(err):
                        problems.append(f"response to {r.step} refused: {err}")
                given.append(r.step)
                continue
        if not await next_event(client, wid, clock, todo[0].step if todo else None):
            await asyncio.sleep(POLL_S)


async def _activity_outcomes(handle: Any) -> dict[str, str]:
    """Each linkage's end, by step id, from the run's history: a query activity's on the
    provider's queue, or the marker of a linkage over the direct channel (a local activity)."""
    scheduled: dict[int, str] = {}
    ended: dict[str, str] = {}
    history = await handle.fetch_history()
    for e in history.events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_id
        for field, outcome in (
            ("activity_task_completed_event_attributes", "provided"),
            ("activity_task_failed_event_attributes", "failed"),
            ("activity_task_timed_out_event_attributes", "failed"),
            ("activity_task_canceled_event_attributes", "cancelled"),
        ):
            if e.HasField(field):
                ended[scheduled[getattr(e, field).scheduled_event_id]] = outcome
        if e.HasField("marker_recorded_event_attributes"):
            found = _direct_outcome(e.marker_recorded_event_attributes)
            if found is not None:
                ended[found[0]] = found[1]
    return ended


def _direct_outcome(marker: Any) -> tuple[str, str] | None:
    """(step, end) of a direct linkage's local activity marker; None for any other marker."""
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    [data] = marker.details["data"].payloads
    try:
        seen = json.loads(data.data)
    except ValueError:
        return None
    if not isinstance(seen, dict) or seen.get("activity_type") != DIRECT_LINKAGE:
        return None
    if not marker.HasField("failure"):
        return str(seen["activity_id"]), "provided"
    cancelled = marker.failure.HasField("canceled_failure_info")
    return str(seen["activity_id"]), "cancelled" if cancelled else "failed"


def _check_records(
    kept: list[records.AccessRecord],
    scenario: Scenario,
    exp: Expectation,
    unreached: set[str],
) -> list[str]:
    problems: list[str] = []
    by_step: dict[str, dict[str, records.AccessRecord]] = {}
    for r in kept:
        by_step.setdefault(r.step, {})[r.keeper] = r
    for step, kept_by in sorted(by_step.items()):
        any_record = next(iter(kept_by.values()))
        for keeper in (scenario.executor, records.HUB):
            if keeper not in kept_by:
                problems.append(f"step {step}: no record kept by {keeper}")
        allowed = any_record.outcome == "allowed"
        if allowed and any_record.provider not in kept_by and step not in unreached:
            problems.append(f"step {step}: the provider {any_record.provider} kept no record")
        if not allowed and not any(x.step == step and x.outcome == "denied" for x in exp.linkages):
            problems.append(f"step {step}: a linkage outside the whitelist was attempted")
    return problems
