"""``renkei gateway`` in front of the real dev server: each party's workers connect with their own
certificate, a flow completes through it, and a party that tries another's queue, flow, task
or the namespace is refused while the other's flow goes on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from temporalio.api.command.v1 import (
    Command,
    SignalExternalWorkflowExecutionCommandAttributes,
    StartChildWorkflowExecutionCommandAttributes,
    UpsertWorkflowSearchAttributesCommandAttributes,
)
from temporalio.api.common.v1 import SearchAttributes, WorkflowExecution
from temporalio.api.enums.v1 import CommandType, TaskQueueKind
from temporalio.api.namespace.v1 import UpdateNamespaceInfo
from temporalio.api.schedule.v1 import Schedule, ScheduleAction
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import NewWorkflowExecutionInfo
from temporalio.api.workflowservice import v1 as ws
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.converter import PayloadConverter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from renkei.app.cli import app
from renkei.app.gateway import Gateway, GatewayFiles, Revocations, running_gateway
from renkei.contracts.names import (
    agency_queue,
    control_queue,
    hub_queue,
    identity_prefix,
    workflow_id,
)
from renkei.kernel import keys, parties, tls
from renkei.kernel.db import GATEWAY, GATEWAY_ROLE, create_login, create_pool
from renkei.kernel.records import revocation_message
from renkei.kernel.search_attributes import EXECUTOR
from renkei.kernel.settings import Settings
from workers.plugin import connect

from .conftest import FirstRun
from .helpers import allowance_check, sdk
from .processes import RenkeiProcess, all_ready, wired, worker

PARTIES = ("hub", "city-minato", "city-shibuya", "jps")


@dataclass
class Pki:
    folder: Path
    foreign: Path

    def files(self, party: str) -> dict[str, str]:
        cert, key = tls.party_paths(self.folder, party)
        return {
            "RENKEI_TEMPORAL_TLS_CA": str(tls.ca_paths(self.folder)[0]),
            "RENKEI_TEMPORAL_TLS_CERT": str(cert),
            "RENKEI_TEMPORAL_TLS_KEY": str(key),
            "RENKEI_TEMPORAL_TLS_SERVER_NAME": "localhost",
        }

    def settings(self, settings: Settings, party: str, folder: Path | None = None) -> Settings:
        cert, key = tls.party_paths(folder or self.folder, party)
        return settings.model_copy(
            update={
                "temporal_tls_ca": tls.ca_paths(self.folder)[0],
                "temporal_tls_cert": cert,
                "temporal_tls_key": key,
                "temporal_tls_server_name": "localhost",
            }
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("tls")
    tls.make_ca(folder)
    for party in PARTIES:
        tls.issue(folder, party)
    tls.issue(folder, tls.GATEWAY, server_names=["localhost", "127.0.0.1"])
    # Another CA's certificates: one for the hub, one for an org.
    foreign = tmp_path_factory.mktemp("foreign-tls")
    tls.make_ca(foreign)
    for party in ("hub", "city-shibuya"):
        tls.issue(foreign, party)
    return Pki(folder, foreign)


@pytest.fixture(scope="module")
def gw_settings(base_settings: Settings) -> Settings:
    """One task-queue prefix for the module: its worker processes serve it (and the agencies'
    their direct-channel endpoints, where the control process asks: not through the gateway)."""
    own = base_settings.model_copy(update={"task_queue_prefix": f"g{uuid.uuid4().hex[:12]}"})
    return wired(own, "city-shibuya", "jps")


@dataclass
class Running:
    address: str
    gateway: Gateway
    settings: Settings
    pki: Pki

    async def client(self, party: str, settings: Settings | None = None) -> Client:
        """A renkei client through the gateway with ``party``'s certificate."""
        return await connect(self.pki.settings(settings or self.settings, party), self.address)


@contextlib.contextmanager
def gateway_thread(
    settings: Settings,
    upstream: str,
    files: GatewayFiles,
    listen: str = "127.0.0.1:0",
    revocations_from: tuple[str, Ed25519PublicKey] | None = None,
) -> Iterator[tuple[Gateway, int]]:
    """A gateway in a thread of its own (its own event loop): the worker processes' starts
    block the tests' loop while they wait for a worker to poll. With ``revocations_from``
    (database URL, the hub's public key) it reads the revoked certificates as `renkei gateway`
    does, on a pool of its own loop."""
    up = threading.Event()
    found: list[tuple[Gateway, int, asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        stop = asyncio.Event()
        read: Revocations | None = None
        own_pool = None
        if revocations_from is not None:
            url, hub = revocations_from
            own_pool = await create_pool(url, max_size=2, role=GATEWAY_ROLE)

            async def read() -> frozenset[tuple[str, int]]:
                assert own_pool is not None
                return await parties.revoked_certificates(own_pool, hub)

        try:
            async with running_gateway(
                settings, upstream, files, listen=listen, revocations=read
            ) as (gw, port):
                found.append((gw, port, asyncio.get_running_loop(), stop))
                up.set()
                await stop.wait()
        finally:
            if own_pool is not None:
                await own_pool.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert up.wait(30), "the gateway did not start"
    gw, port, loop, stop = found[0]
    try:
        yield gw, port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        # The closed server's and channel's threads end when they are collected: now, not in
        # the middle of a later test that counts the process's threads.
        del gw, loop, stop
        found.clear()
        gc.collect()


def gateway_files(pki: Pki) -> GatewayFiles:
    cert, key = tls.party_paths(pki.folder, tls.GATEWAY)
    return GatewayFiles(tls.ca_paths(pki.folder)[0], cert, key)


@pytest.fixture(scope="module")
def gateway(
    temporal_env: WorkflowEnvironment, pool, gw_settings: Settings, pki: Pki
) -> Iterator[Running]:
    upstream = temporal_env.client.service_client.config.target_host
    with gateway_thread(gw_settings, upstream, gateway_files(pki)) as (gw, port):
        yield Running(f"localhost:{port}", gw, gw_settings, pki)


@pytest.fixture(scope="module")
def processes(gateway: Running) -> Iterator[list[RenkeiProcess]]:
    """The hub's worker, Minato's control worker, Shibuya's and the JPS's agency workers, each
    its own process with its own certificate, all through the gateway."""
    s, pki = gateway.settings, gateway.pki
    procs = all_ready(
        [
            worker(s, gateway.address, kind, *args, ready=False, **pki.files(party))
            for kind, party, args in (
                ("hub", "hub", ()),
                ("control", "city-minato", ("city-minato",)),
                ("agency", "city-shibuya", ("city-shibuya",)),
                ("agency", "jps", ("jps",)),
            )
        ]
    )
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def _denied(err: pytest.ExceptionInfo[RPCError], party: str, method: str) -> None:
    assert err.value.status == RPCStatusCode.PERMISSION_DENIED, err.value
    assert f"{party} may not call {method}" in err.value.message, err.value.message


async def test_a_flow_completes_with_each_party_on_its_own_certificate(
    gateway: Running, processes: list[RenkeiProcess]
) -> None:
    minato = await gateway.client("city-minato")
    flow = allowance_check(gateway.settings)
    handle = await sdk(minato, gateway.settings).start(flow)
    # The frontend's errors come back as they are, details too: the same start again is told
    # "already started" (a detail of the error) and returns the run it began.
    again = await sdk(minato, gateway.settings).start(flow)
    assert again.result_run_id == handle.result_run_id
    with pytest.raises(RPCError) as err:
        await minato.workflow_service.describe_workflow_execution(
            ws.DescribeWorkflowExecutionRequest(
                namespace=gateway.settings.namespace,
                execution=WorkflowExecution(workflow_id=f"{flow.bpf}/city-minato/no-such-case"),
            )
        )
    assert err.value.status == RPCStatusCode.NOT_FOUND
    result = await asyncio.wait_for(handle.result(), 120)
    assert {(x.provider, x.outcome) for x in result.linkages} == {
        ("city-shibuya", "provided"),
        ("jps", "provided"),
    }
    # Nothing the parties do on their own paths was refused.
    assert not gateway.gateway.denied, gateway.gateway.denied
    # Each worker's identity names its party (its certificate's), and so do its sticky queues.
    sticky = gateway.gateway.policy._sticky
    assert sticky and all(name.startswith(identity_prefix(o)) for name, o in sticky.items())
    # An executor's own API lists its own runs through the gateway, and only its own.
    runs = await sdk(minato, gateway.settings).runs(executor="city-minato", bpf=flow.bpf)
    assert handle.id in {r.workflow_id for r in runs}
    assert {r.executor for r in runs} == {"city-minato"}
    for others in ({"executor": "city-shibuya"}, {}):
        with pytest.raises(RPCError) as err:
            await sdk(minato, gateway.settings).runs(**others)  # type: ignore[arg-type]
        _denied(err, "city-minato", "ListWorkflowExecutions")
    gateway.gateway.denied.clear()


async def test_a_waiting_flow_is_answered_by_its_executor_and_by_no_other_org(
    gateway: Running, processes: list[RenkeiProcess], pool
) -> None:
    """A flow waiting for an answer, through the gateway: its executor reads what it waits for
    (a query) and answers it (an update); another org's update is refused by the gateway
    before it reaches the flow."""
    from renkei.contracts.messages import Response

    from .helpers import code, pick, register_fixture, start

    await register_fixture(pool, "consent-probe.yaml")
    s = gateway.settings
    rc = sdk(await gateway.client("city-minato"), s)
    person = pick(s, lambda h: h.municipality == "city-shibuya").members[0]
    handle = await rc.start(
        start("consent-probe", "city-minato", code(s, "city-minato", person), trigger="portal")
    )
    for _ in range(600):  # poll until the flow waits (its linkage first)
        if await rc.waiting(handle.id):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the flow never waited")
    rogue = (await gateway.client("city-shibuya")).get_workflow_handle(handle.id)
    with pytest.raises(RPCError) as err:
        await rogue.execute_update(
            "renkei.respond", Response(step="consent", payload={"agree": False})
        )
    _denied(err, "city-shibuya", "UpdateWorkflowExecution")
    await rc.respond(handle.id, "consent", {"agree": True})
    assert (await asyncio.wait_for(handle.result(), 120)).outcome == "completed"
    assert not [k for k in gateway.gateway.denied if k[0] == "city-minato"]


async def test_a_flow_with_a_child_flow_completes_through_the_gateway(
    gateway: Running, processes: list[RenkeiProcess], pool
) -> None:
    """A one-stop flow calls another BPF as a child flow: the executor's workflow task starts
    the child (its own id, its own queue), which the gateway lets through."""
    from .helpers import code, register_fixture, shibuya_family, start

    await register_fixture(pool, "one-stop-probe.yaml")
    s = gateway.settings
    rc = sdk(await gateway.client("city-minato"), s)
    subject = code(s, "city-minato", shibuya_family(s, 1).members[0])
    handle = await rc.start(start("one-stop-probe", "city-minato", subject))
    result = await asyncio.wait_for(handle.result(), 120)
    assert result.outcome == "completed"
    assert result.result["same"] is True
    assert not [k for k in gateway.gateway.denied if k[0] == "city-minato"]


async def test_an_org_cannot_poll_another_orgs_queue_nor_the_hubs(gateway: Running) -> None:
    shibuya = await gateway.client("city-shibuya")
    prefix = gateway.settings.task_queue_prefix
    for queue in (agency_queue(prefix, "jps"), hub_queue(prefix), control_queue(prefix, "jps")):
        with pytest.raises(RPCError) as err:
            await shibuya.workflow_service.poll_activity_task_queue(
                ws.PollActivityTaskQueueRequest(
                    namespace=gateway.settings.namespace,
                    task_queue=TaskQueue(name=queue),
                    identity="hub",  # what a request says of itself counts for nothing
                )
            )
        _denied(err, "city-shibuya", "PollActivityTaskQueue")
    # A sticky queue is polled for the org's own queue only.
    with pytest.raises(RPCError) as err:
        await shibuya.workflow_service.poll_workflow_task_queue(
            ws.PollWorkflowTaskQueueRequest(
                namespace=gateway.settings.namespace,
                task_queue=TaskQueue(
                    name=f"sticky-{uuid.uuid4().hex}",
                    kind=TaskQueueKind.TASK_QUEUE_KIND_STICKY,
                    normal_name=control_queue(prefix, "city-minato"),
                ),
            )
        )
    _denied(err, "city-shibuya", "PollWorkflowTaskQueue")
    # For its own queue, a sticky queue is still named after its own identity only: a name of
    # Minato's workers' (claimed or not yet) is not Shibuya's to claim.
    for name in (*gateway.gateway.policy._sticky, f"{identity_prefix('city-minato')}1@h-next"):
        with pytest.raises(RPCError) as err:
            await shibuya.workflow_service.poll_workflow_task_queue(
                ws.PollWorkflowTaskQueueRequest(
                    namespace=gateway.settings.namespace,
                    task_queue=TaskQueue(
                        name=name,
                        kind=TaskQueueKind.TASK_QUEUE_KIND_STICKY,
                        normal_name=agency_queue(prefix, "city-shibuya"),
                    ),
                )
            )
        _denied(err, "city-shibuya", "PollWorkflowTaskQueue")
        assert "begins with 'city-shibuya/'" in err.value.message
    assert gateway.gateway.denied[("city-shibuya", "PollActivityTaskQueue", "own queues")] >= 3


async def test_an_org_cannot_start_a_flow_in_another_executors_name(gateway: Running) -> None:
    shibuya = await gateway.client("city-shibuya")
    prefix = gateway.settings.task_queue_prefix
    flow = allowance_check(gateway.settings)
    for wid, queue in (
        (workflow_id(flow.bpf, "city-minato", flow.case_ref), control_queue(prefix, "city-minato")),
        # its own id, on another's queue: still another executor's worker would run it
        (
            workflow_id(flow.bpf, "city-shibuya", flow.case_ref),
            control_queue(prefix, "city-minato"),
        ),
        ("no-renkei-id", control_queue(prefix, "city-shibuya")),
    ):
        with pytest.raises(RPCError) as err:
            await shibuya.start_workflow(flow.bpf, flow, id=wid, task_queue=queue)
        _denied(err, "city-shibuya", "StartWorkflowExecution")


async def test_an_org_cannot_touch_another_executors_flow_which_goes_on(
    gateway: Running, pki: Pki, base_settings: Settings, temporal_env: WorkflowEnvironment
) -> None:
    """Minato's flow is started while no worker serves its prefix: it waits, open, while
    Shibuya signals, updates, queries, reads, resets, cancels and terminates it (all refused);
    then Minato's workers start and it completes."""
    own = wired(
        base_settings.model_copy(update={"task_queue_prefix": f"g{uuid.uuid4().hex[:12]}"}),
        "city-shibuya",
        "jps",
    )
    minato = await gateway.client("city-minato", own)
    handle = await sdk(minato, own).start(allowance_check(own))
    shibuya = (await gateway.client("city-shibuya", own)).workflow_service
    ns = own.namespace
    run = WorkflowExecution(workflow_id=handle.id)
    attacks = {
        "SignalWorkflowExecution": shibuya.signal_workflow_execution(
            ws.SignalWorkflowExecutionRequest(
                namespace=ns, workflow_execution=run, signal_name="renkei.event"
            )
        ),
        "TerminateWorkflowExecution": shibuya.terminate_workflow_execution(
            ws.TerminateWorkflowExecutionRequest(namespace=ns, workflow_execution=run)
        ),
        "RequestCancelWorkflowExecution": shibuya.request_cancel_workflow_execution(
            ws.RequestCancelWorkflowExecutionRequest(namespace=ns, workflow_execution=run)
        ),
        "ResetWorkflowExecution": shibuya.reset_workflow_execution(
            ws.ResetWorkflowExecutionRequest(
                namespace=ns, workflow_execution=run, workflow_task_finish_event_id=2
            )
        ),
        "DeleteWorkflowExecution": shibuya.delete_workflow_execution(
            ws.DeleteWorkflowExecutionRequest(namespace=ns, workflow_execution=run)
        ),
        "DescribeWorkflowExecution": shibuya.describe_workflow_execution(
            ws.DescribeWorkflowExecutionRequest(namespace=ns, execution=run)
        ),
        "GetWorkflowExecutionHistory": shibuya.get_workflow_execution_history(
            ws.GetWorkflowExecutionHistoryRequest(namespace=ns, execution=run)
        ),
        "ListWorkflowExecutions": shibuya.list_workflow_executions(
            ws.ListWorkflowExecutionsRequest(namespace=ns)
        ),
    }
    for method, call in attacks.items():
        with pytest.raises(RPCError) as err:
            await call
        _denied(err, "city-shibuya", method)
    # The same flow as its executor sees it: open, untouched.
    described = await minato.get_workflow_handle(handle.id).describe()
    assert described.status is not None and described.status.name == "RUNNING"
    s, files = own, pki.files
    procs = all_ready(
        [
            worker(s, gateway.address, "hub", ready=False, **files("hub")),
            worker(
                s, gateway.address, "control", "city-minato", ready=False, **files("city-minato")
            ),
            worker(
                s, gateway.address, "agency", "city-shibuya", ready=False, **files("city-shibuya")
            ),
            worker(s, gateway.address, "agency", "jps", ready=False, **files("jps")),
        ]
    )
    try:
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        for p in procs:
            p.stop()
    assert {x.outcome for x in result.linkages} == {"provided"}


async def test_a_task_is_answered_only_with_a_token_handed_to_the_party(
    gateway: Running, base_settings: Settings
) -> None:
    """Minato polls its own (otherwise unserved) control queue and gets a real workflow task;
    Shibuya, with that very token, cannot fail nor complete it; nor with a made-up one. Minato
    cannot complete it with commands reaching Shibuya's flows; it can fail it."""
    own = base_settings.model_copy(update={"task_queue_prefix": f"g{uuid.uuid4().hex[:12]}"})
    minato = await gateway.client("city-minato", own)
    await sdk(minato, own).start(allowance_check(own))
    task = await minato.workflow_service.poll_workflow_task_queue(
        ws.PollWorkflowTaskQueueRequest(
            namespace=own.namespace,
            task_queue=TaskQueue(name=control_queue(own.task_queue_prefix, "city-minato")),
        )
    )
    assert task.task_token
    shibuya = (await gateway.client("city-shibuya", own)).workflow_service
    for token in (task.task_token, b"\x0a\x24" + uuid.uuid4().bytes):
        with pytest.raises(RPCError) as err:
            await shibuya.respond_workflow_task_failed(
                ws.RespondWorkflowTaskFailedRequest(namespace=own.namespace, task_token=token)
            )
        _denied(err, "city-shibuya", "RespondWorkflowTaskFailed")
        with pytest.raises(RPCError) as err:
            await shibuya.respond_workflow_task_completed(
                ws.RespondWorkflowTaskCompletedRequest(namespace=own.namespace, task_token=token)
            )
        _denied(err, "city-shibuya", "RespondWorkflowTaskCompleted")
        with pytest.raises(RPCError) as err:
            await shibuya.respond_activity_task_completed(
                ws.RespondActivityTaskCompletedRequest(namespace=own.namespace, task_token=token)
            )
        _denied(err, "city-shibuya", "RespondActivityTaskCompleted")
    # Its own task, but commands reaching another executor's flows: a signal to Shibuya's
    # flow, a child in Shibuya's name.
    other = workflow_id("child-allowance-check", "city-shibuya", "case-x")
    for command in (
        Command(
            command_type=CommandType.COMMAND_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION,
            signal_external_workflow_execution_command_attributes=SignalExternalWorkflowExecutionCommandAttributes(
                namespace=own.namespace,
                execution=WorkflowExecution(workflow_id=other),
                signal_name="renkei.event",
            ),
        ),
        Command(
            command_type=CommandType.COMMAND_TYPE_START_CHILD_WORKFLOW_EXECUTION,
            start_child_workflow_execution_command_attributes=StartChildWorkflowExecutionCommandAttributes(
                namespace=own.namespace,
                workflow_id=other,
                task_queue=TaskQueue(name=control_queue(own.task_queue_prefix, "city-minato")),
            ),
        ),
    ):
        with pytest.raises(RPCError) as err:
            await minato.workflow_service.respond_workflow_task_completed(
                ws.RespondWorkflowTaskCompletedRequest(
                    namespace=own.namespace, task_token=task.task_token, commands=[command]
                )
            )
        _denied(err, "city-minato", "RespondWorkflowTaskCompleted")
    # The party it was handed to answers it (the frontend takes the answer).
    await minato.workflow_service.respond_workflow_task_failed(
        ws.RespondWorkflowTaskFailedRequest(namespace=own.namespace, task_token=task.task_token)
    )


async def test_an_org_cannot_pass_its_flow_off_as_another_executors_run(
    gateway: Running, base_settings: Settings
) -> None:
    """Shibuya starts a flow under its own id on its own queue but naming Minato as its
    executor, or sets that later from its own workflow task: both refused, so Minato's listing
    of its runs (and the platform's) never shows Shibuya's flow as Minato's."""
    own = base_settings.model_copy(update={"task_queue_prefix": f"g{uuid.uuid4().hex[:12]}"})
    prefix, ns = own.task_queue_prefix, own.namespace
    shibuya = await gateway.client("city-shibuya", own)
    queue = control_queue(prefix, "city-shibuya")
    flow = allowance_check(own)
    posing = workflow_id(flow.bpf, "city-shibuya", f"pose-{uuid.uuid4().hex[:8]}")
    with pytest.raises(RPCError) as err:
        await shibuya.start_workflow(
            flow.bpf,
            flow,
            id=posing,
            task_queue=queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(EXECUTOR, "city-minato")]),
        )
    _denied(err, "city-shibuya", "StartWorkflowExecution")
    # Its own flow, named as its own; then its workflow task tries to rename the executor.
    honest = workflow_id(flow.bpf, "city-shibuya", f"own-{uuid.uuid4().hex[:8]}")
    await shibuya.start_workflow(
        flow.bpf,
        flow,
        id=honest,
        task_queue=queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(EXECUTOR, "city-shibuya")]),
    )
    task = await shibuya.workflow_service.poll_workflow_task_queue(
        ws.PollWorkflowTaskQueueRequest(namespace=ns, task_queue=TaskQueue(name=queue))
    )
    assert task.workflow_execution.workflow_id == honest
    upsert = Command(
        command_type=CommandType.COMMAND_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        upsert_workflow_search_attributes_command_attributes=UpsertWorkflowSearchAttributesCommandAttributes(
            search_attributes=SearchAttributes(
                indexed_fields={EXECUTOR.name: PayloadConverter.default.to_payload("city-minato")}
            )
        ),
    )
    with pytest.raises(RPCError) as err:
        await shibuya.workflow_service.respond_workflow_task_completed(
            ws.RespondWorkflowTaskCompletedRequest(
                namespace=ns, task_token=task.task_token, commands=[upsert]
            )
        )
    _denied(err, "city-shibuya", "RespondWorkflowTaskCompleted")
    await shibuya.workflow_service.respond_workflow_task_failed(
        ws.RespondWorkflowTaskFailedRequest(namespace=ns, task_token=task.task_token)
    )
    # Minato's listing of its runs: neither of Shibuya's flows (the honest one lists as
    # Shibuya's, which shows the listing reads the flows at all).
    for _ in range(300):  # until the listing has caught up with the honest start
        mine = [w.id async for w in shibuya.list_workflows(f"{EXECUTOR.name} = 'city-shibuya'")]
        if honest in mine:
            break
        await asyncio.sleep(0.1)
    assert honest in mine
    minato = await gateway.client("city-minato", own)
    theirs = [w.id async for w in minato.list_workflows(f"{EXECUTOR.name} = 'city-minato'")]
    assert posing not in theirs and honest not in theirs
    await shibuya.get_workflow_handle(honest).terminate()


async def test_an_org_cannot_make_schedules_nor_change_the_namespace(gateway: Running) -> None:
    shibuya = (await gateway.client("city-shibuya")).workflow_service
    ns = gateway.settings.namespace
    prefix = gateway.settings.task_queue_prefix
    schedule = Schedule(
        action=ScheduleAction(
            start_workflow=NewWorkflowExecutionInfo(
                workflow_id=workflow_id("child-allowance-check", "city-shibuya", "x"),
                task_queue=TaskQueue(name=control_queue(prefix, "city-shibuya")),
            )
        )
    )
    with pytest.raises(RPCError) as err:
        await shibuya.create_schedule(
            ws.CreateScheduleRequest(namespace=ns, schedule_id="s", schedule=schedule)
        )
    _denied(err, "city-shibuya", "CreateSchedule")
    with pytest.raises(RPCError) as err:
        await shibuya.update_namespace(
            ws.UpdateNamespaceRequest(
                namespace=ns, update_info=UpdateNamespaceInfo(description="mine")
            )
        )
    _denied(err, "city-shibuya", "UpdateNamespace")
    with pytest.raises(RPCError) as err:
        await (await gateway.client("city-shibuya")).operator_service.add_search_attributes(
            __import__(
                "temporalio.api.operatorservice.v1", fromlist=["AddSearchAttributesRequest"]
            ).AddSearchAttributesRequest(namespace=ns)
        )
    _denied(err, "city-shibuya", "AddSearchAttributes")
    # What names no one is open to every party.
    info = await shibuya.describe_namespace(ws.DescribeNamespaceRequest(namespace=ns))
    assert info.namespace_info.name == ns


async def test_denials_are_logged_without_payloads(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    jps = (await gateway.client("jps")).workflow_service
    ns = gateway.settings.namespace
    with caplog.at_level(logging.WARNING, "renkei.gateway"), pytest.raises(RPCError):
        await jps.signal_workflow_execution(
            ws.SignalWorkflowExecutionRequest(
                namespace=ns,
                workflow_execution=WorkflowExecution(workflow_id="bpf/city-minato/case-1"),
                signal_name="s",
                identity="PERSONAL-123456789012",
            )
        )
    [line] = [r.getMessage() for r in caplog.records if r.name == "renkei.gateway"]
    assert "party=jps method=SignalWorkflowExecution rule=own flows" in line
    assert "PERSONAL" not in line


async def test_no_certificate_or_another_cas_certificate_gets_no_connection(
    gateway: Running, pki: Pki
) -> None:
    ca = tls.ca_paths(pki.folder)[0].read_bytes()
    target = gateway.address
    # The platform's hub certificate connects: the control case.
    hub = await connect(pki.settings(gateway.settings, "hub"), target)
    await hub.workflow_service.get_system_info(ws.GetSystemInfoRequest())

    async def attempt(tls_config: TLSConfig) -> None:
        client = await Client.connect(target, tls=tls_config)
        await client.workflow_service.get_system_info(ws.GetSystemInfoRequest(), timeout=None)

    with pytest.raises(RuntimeError):  # no client certificate: the handshake fails
        await attempt(TLSConfig(server_root_ca_cert=ca, domain="localhost"))
    for party in ("hub", "city-shibuya"):  # the right names, from another CA
        cert, key = tls.party_paths(pki.foreign, party)
        with pytest.raises(RuntimeError):
            await attempt(
                TLSConfig(
                    server_root_ca_cert=ca,
                    domain="localhost",
                    client_cert=cert.read_bytes(),
                    client_private_key=key.read_bytes(),
                )
            )
    with pytest.raises(RuntimeError):  # plain, without TLS
        await Client.connect(target)
    # The platform CA's certificate that names no party (the gateway's own, as a client's): no
    # connection, or no call.
    cert, key = tls.party_paths(pki.folder, tls.GATEWAY)
    server_as_client = TLSConfig(
        server_root_ca_cert=ca,
        domain="localhost",
        client_cert=cert.read_bytes(),
        client_private_key=key.read_bytes(),
    )
    with pytest.raises((RuntimeError, RPCError)) as failed:
        await attempt(server_as_client)
    if isinstance(failed.value, RPCError):
        assert failed.value.status == RPCStatusCode.UNAUTHENTICATED, failed.value


async def test_renkei_gateway_runs_as_its_own_process_and_counts_denials(
    temporal_env: WorkflowEnvironment, gw_settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    """``renkei gateway`` as an operator starts it (the hub's public keys, no key file): a party
    connects through it, a denial is a line on its log and a count on its metrics endpoint."""
    import httpx

    from .conftest import free_port
    from .processes import renkei_env

    port, metrics = free_port(), free_port()
    hub_public = tmp_path / "hub-public.json"
    hub_public.write_text(keys.load(gw_settings).public("hub").model_dump_json())
    env = renkei_env(
        gw_settings,
        temporal_env.client.service_client.config.target_host,
        RENKEI_GATEWAY_LISTEN=f"127.0.0.1:{port}",
        RENKEI_TEMPORAL_TLS_CA=str(tls.ca_paths(pki.folder)[0]),
        RENKEI_GATEWAY_CERT=str(tls.party_paths(pki.folder, tls.GATEWAY)[0]),
        RENKEI_GATEWAY_KEY=str(tls.party_paths(pki.folder, tls.GATEWAY)[1]),
        RENKEI_METRICS_PORT=str(metrics),
        RENKEI_GATEWAY_HUB_PUBLIC=str(hub_public),
        RENKEI_KEYS_FILE=str(tmp_path / "no-keys.json"),
    )
    process = RenkeiProcess(["gateway"], env, "gateway listening").wait_ready()
    try:
        jps = await connect(pki.settings(gw_settings, "jps"), f"localhost:{port}")
        with pytest.raises(RPCError) as err:
            await jps.workflow_service.count_workflow_executions(
                ws.CountWorkflowExecutionsRequest(namespace=gw_settings.namespace)
            )
        _denied(err, "jps", "CountWorkflowExecutions")
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
        [count] = [
            line
            for line in text.splitlines()
            if line.startswith("renkei_gateway_denials")
            and 'method="CountWorkflowExecutions"' in line
        ]
        assert 'party="jps"' in count and 'rule="platform only"' in count
        assert count.rsplit(" ", 1)[1] == "1"
    finally:
        process.stop()
    assert process.process.returncode == 0, process.output
    assert "gateway denied party=jps method=CountWorkflowExecutions rule=platform only" in (
        process.output
    )


async def test_made_up_methods_and_unreadable_requests_get_their_answer(
    gateway: Running, pki: Pki
) -> None:
    """Raw gRPC with Shibuya's certificate: a method no service has is refused (and counted
    under one label, not its made-up name); a request that is not the method's message is
    refused as unreadable."""
    import grpc
    import grpc.aio

    cert, key = tls.party_paths(pki.folder, "city-shibuya")
    credentials = grpc.ssl_channel_credentials(
        tls.ca_paths(pki.folder)[0].read_bytes(), key.read_bytes(), cert.read_bytes()
    )
    service = "/temporal.api.workflowservice.v1.WorkflowService"
    async with grpc.aio.secure_channel(
        gateway.address.replace("localhost", "127.0.0.1"),
        credentials,
        options=[("grpc.ssl_target_name_override", "localhost")],
    ) as channel:

        def raw(method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
            return channel.unary_unary(f"{service}/{method}")

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw(f"MadeUp{uuid.uuid4().hex}")(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert gateway.gateway.denied[("city-shibuya", "unknown method", "platform only")] >= 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw("PollActivityTaskQueue")(b"\xff\xff\xff", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not readable" in (err.value.details() or "")


async def _until(check: Callable[[], bool], what: str) -> None:
    """Poll until ``check`` holds (a generous bound: a failure, not a speed, is tested)."""
    for _ in range(1200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_a_certificate_revoked_while_its_worker_runs_gets_no_more_calls(
    temporal_env: WorkflowEnvironment, pool, base_settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    """The JPS's worker runs through the gateway with a certificate that is then lost. A
    revocation no one signed, or signed by another key, changes nothing; the hub's signed
    revocation (`renkei keys tls-revoke`) cuts the worker's poll in flight and refuses every
    call of that certificate from the gateway's next read on, while the JPS's other certificate
    is still admitted."""
    own = base_settings.model_copy(
        update={
            "task_queue_prefix": f"g{uuid.uuid4().hex[:12]}",
            "gateway_revocation_refresh": 0.2,
        }
    )
    lost = tmp_path / "lost"
    cert, _ = tls.issue(pki.folder, "jps", out=lost)
    serial = tls.serial_of(cert.read_bytes())
    assert serial is not None
    hub = keys.load(own).signer()
    upstream = temporal_env.client.service_client.config.target_host
    source = (own.database_url or "", hub.public_key())
    with gateway_thread(own, upstream, gateway_files(pki), revocations_from=source) as (gw, port):
        address = f"localhost:{port}"
        proc = worker(
            own,
            address,
            "agency",
            "jps",
            **{
                **pki.files("jps"),
                "RENKEI_TEMPORAL_TLS_CERT": str(cert),
                "RENKEI_TEMPORAL_TLS_KEY": str(tls.party_paths(lost, "jps")[1]),
            },
        )
        try:
            await _until(lambda: ("jps", serial) in gw._inflight, "the worker polls")
            # Forged: signed by another key, and unsigned (the trigger dates it, so it is not
            # one carried over from before signed revocations).
            at = await pool.fetchval("SELECT clock_timestamp()")
            other = Ed25519PrivateKey.generate()
            signed = revocation_message("jps", parties.certificate_id(serial), at, "forged")
            await pool.execute(
                "INSERT INTO trust.revocations (party, signing_id, revoked_at, reason,"
                " hub_signature) VALUES ($1, $2, $3, 'forged', $4), ($1, $2, $3, 'forged', NULL)",
                "jps",
                parties.certificate_id(serial),
                at,
                base64.b64encode(other.sign(signed)).decode(),
            )
            reads = gw.reads
            await _until(lambda: gw.reads >= reads + 2, "the gateway reads the revocations")
            assert not gw.revoked
            client = await connect(pki.settings(own, "jps", lost), address)
            await client.workflow_service.get_system_info(ws.GetSystemInfoRequest())
            assert ("jps", serial) in gw._inflight  # its worker still polls
            assert not gw.denied

            await parties.revoke_certificate(pool, hub, "jps", serial, reason="laptop lost")
            await _until(lambda: ("jps", serial) in gw.revoked, "the revocation is read")
            # The poll in flight was cut, and the worker's calls since are refused.
            await _until(lambda: gw.cut >= 1, "the worker's poll in flight is cut")
            await _until(
                lambda: gw.denied[("unknown", "PollActivityTaskQueue", "identity")] >= 1,
                "the worker's poll is refused",
            )
            with pytest.raises(RPCError) as err:
                await client.workflow_service.get_system_info(ws.GetSystemInfoRequest())
            assert err.value.status == RPCStatusCode.UNAUTHENTICATED
            assert "revoked" in err.value.message
            with pytest.raises(RuntimeError, match=r"(?i)unauthenticated|revoked"):
                await connect(pki.settings(own, "jps", lost), address)
            current = await connect(pki.settings(own, "jps"), address)
            await current.workflow_service.get_system_info(ws.GetSystemInfoRequest())
        finally:
            proc.stop()


async def test_the_conformance_kits_own_connection_follows_the_tls_settings(
    gateway: Running,
) -> None:
    """The kit runs its flows on a connection of its own (no metrics): it is made as every
    other, from the settings, so through the gateway it speaks mutual TLS with the process's
    certificate; settings without TLS dial in plain text, which the gateway does not answer."""
    from renkei.app.kit.runner import _unmetered

    s = gateway.pki.settings(gateway.settings, "hub")
    hub = await connect(s, gateway.address)
    own = await _unmetered(hub, s)
    assert own.service_client is not hub.service_client
    assert own.service_client.config.target_host == gateway.address
    await own.workflow_service.get_system_info(ws.GetSystemInfoRequest())
    plain = gateway.settings.model_copy(update={"temporal_tls_ca": None})
    with pytest.raises(RuntimeError):
        await _unmetered(hub, plain)


async def test_after_a_gateway_restart_a_task_handed_out_before_is_handed_out_again(
    temporal_env: WorkflowEnvironment, pool, base_settings: Settings, pki: Pki
) -> None:
    """Minato takes a workflow task through one gateway, which then restarts on the same
    address: the new one never handed that token out and refuses the answer; the task times out
    on the frontend and Temporal hands it out again, through the new gateway, to Minato."""
    from .conftest import free_port

    own = base_settings.model_copy(update={"task_queue_prefix": f"g{uuid.uuid4().hex[:12]}"})
    upstream = temporal_env.client.service_client.config.target_host
    listen = f"127.0.0.1:{free_port()}"
    address = listen.replace("127.0.0.1", "localhost")
    queue = TaskQueue(name=control_queue(own.task_queue_prefix, "city-minato"))
    poll = ws.PollWorkflowTaskQueueRequest(namespace=own.namespace, task_queue=queue)
    with gateway_thread(own, upstream, gateway_files(pki), listen):
        minato = await connect(pki.settings(own, "city-minato"), address)
        handle = await sdk(minato, own).start(allowance_check(own))
        first = await minato.workflow_service.poll_workflow_task_queue(poll)
        assert first.task_token and first.workflow_execution.workflow_id == handle.id
    with gateway_thread(own, upstream, gateway_files(pki), listen) as (restarted, _):
        with pytest.raises(RPCError) as err:
            await minato.workflow_service.respond_workflow_task_failed(
                ws.RespondWorkflowTaskFailedRequest(
                    namespace=own.namespace, task_token=first.task_token
                )
            )
        _denied(err, "city-minato", "RespondWorkflowTaskFailed")
        again = ws.PollWorkflowTaskQueueResponse()
        while not again.task_token:  # a long poll ends empty after a minute: poll again
            again = await minato.workflow_service.poll_workflow_task_queue(poll)
        assert again.workflow_execution.workflow_id == handle.id
        assert again.attempt == 2  # the same task, its second attempt
        assert restarted.policy.holds("city-minato", again.task_token)
        await minato.workflow_service.respond_workflow_task_failed(
            ws.RespondWorkflowTaskFailedRequest(
                namespace=own.namespace, task_token=again.task_token
            )
        )


async def test_renkei_up_with_the_gateway_runs_each_partys_workers_through_it(
    first_run: FirstRun,
) -> None:
    """``renkei up --gateway``: it makes the CA and every party's certificate under the data
    folder, starts the gateway, and runs each party's workers through it on their own
    certificate. A flow started through the gateway with the certificate it made for Minato
    completes, and the gateway counted each party's own polls and answers.

    ``up`` runs its own stack (its embedded PostgreSQL and Temporal dev server) on the folder
    the demo left (``first_run``: the samples in operation, the life-event schedules made, as a
    fresh install's first start leaves them; that start is the demo's, paid once in the suite),
    so the suite's shared servers stay as the other tests left them."""
    import httpx

    from renkei.app.gateway import party_settings

    from .conftest import free_port, own_stack_env

    data = first_run.data
    own = Settings(data_dir=data, keys_file=None, database_url=None, temporal_address=None)
    port, metrics = free_port(), free_port()
    env = own_stack_env(data)
    env.update(RENKEI_GATEWAY_LISTEN=f"127.0.0.1:{port}", RENKEI_METRICS_PORT=str(metrics))
    up = RenkeiProcess(["up", "--gateway"], env, "renkei is up").wait_ready(400)
    try:
        assert f"gateway       localhost:{port}" in up.output, up.output
        folder = data / "tls"
        for party in ("hub", "city-minato", "city-shibuya", "jps", tls.GATEWAY):
            assert tls.party_paths(folder, party)[0].exists(), party
        minato = await connect(party_settings(own, folder, "city-minato"), f"localhost:{port}")
        handle = await sdk(minato, own).start(allowance_check(own))
        result = await asyncio.wait_for(handle.result(), 180)
        assert {(x.provider, x.outcome) for x in result.linkages} == {
            ("city-shibuya", "provided"),
            ("jps", "provided"),
        }
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
        calls = {
            (line.split('party="')[1].split('"')[0], line.split('method="')[1].split('"')[0])
            for line in text.splitlines()
            if line.startswith("renkei_gateway_calls")
        }
        for party, method in (
            ("hub", "PollActivityTaskQueue"),
            ("city-minato", "PollWorkflowTaskQueue"),
            ("city-minato", "RespondWorkflowTaskCompleted"),
        ):
            assert (party, method) in calls, (party, method, sorted(calls))
        # The providers answered over the direct channel (the default transport: `up` runs
        # with none of the caller's settings), which goes through neither the gateway nor
        # Temporal: no activity of theirs was answered there.
        assert Settings.model_fields["linkage_transport"].default == "direct"
        for party in ("city-shibuya", "jps"):
            assert (party, "RespondActivityTaskCompleted") not in calls, sorted(calls)
        assert not [line for line in text.splitlines() if line.startswith("renkei_gateway_deni")]
    finally:
        up.stop()
    assert up.process.returncode == 0, up.output


def test_renkei_keys_tls_revoke_states_the_revocation_in_the_registry(
    cli: CliRunner, base_settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    """The command an operator runs: the hub's signed statement naming the certificate's party
    and serial, which the gateway's read finds (run again, it appends another statement)."""
    cert, _ = tls.issue(pki.folder, "city-shibuya", out=tmp_path)
    serial = tls.serial_of(cert.read_bytes())
    assert serial is not None

    async def revoked() -> frozenset[tuple[str, int]]:
        assert base_settings.database_url
        own = await create_pool(base_settings.database_url, max_size=1)
        try:
            return await parties.revoked_certificates(
                own, keys.load(base_settings).signer().public_key()
            )
        finally:
            await own.close()

    assert ("city-shibuya", serial) not in asyncio.run(revoked())
    for _ in range(2):
        done = cli.invoke(app, ["keys", "tls-revoke", str(cert), "--reason", "laptop lost"])
        assert done.exit_code == 0, done.output
        assert f"city-shibuya: certificate {serial:x} revoked" in done.output
    assert ("city-shibuya", serial) in asyncio.run(revoked())


async def test_the_gateways_own_login_reads_the_revocations_and_nothing_else(
    pool, base_settings: Settings
) -> None:
    """The gateway's database login (`renkei init --db-logins` with gateway.password) reads the
    hub's revocations as the gateway does; leaving its role or taking another's gets it
    nothing else, and it cannot state a revocation itself."""
    import secrets

    import asyncpg

    from .test_processes import _as_login

    password = secrets.token_urlsafe(24)
    login = await create_login(pool, GATEWAY, password)
    assert login == "renkei_login_gateway"
    assert base_settings.database_url
    url = _as_login(base_settings.database_url, login, password)
    own = await create_pool(url, max_size=1, role=GATEWAY_ROLE)
    try:
        hub = keys.load(base_settings).signer().public_key()
        assert isinstance(await parties.revoked_certificates(own, hub), frozenset)
    finally:
        await own.close()
    conn = await asyncpg.connect(url)
    try:
        for escape in ("", "RESET ROLE", "SET ROLE renkei_app", "SET ROLE renkei_org_jps"):
            if escape:
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute(escape)
            for table in ("trust.parties", "hub.subject_codes", "records.access_records"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO trust.revocations (party, signing_id, revoked_at, reason)"
                    " VALUES ('jps', 'tls:1', now(), 'forged')"
                )
    finally:
        await conn.close()
