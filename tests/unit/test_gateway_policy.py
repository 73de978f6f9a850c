"""The gateway's policy (renkei.contracts.calls): every rule, allowed and denied."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.command.v1 import Command
from temporalio.api.common.v1 import Callback, Payload, SearchAttributes, WorkflowExecution
from temporalio.api.enums.v1 import CommandType, TaskQueueKind
from temporalio.api.taskqueue.v1 import StickyExecutionAttributes, TaskQueue
from temporalio.api.update.v1 import UpdateRef
from temporalio.api.worker.v1 import WorkerHeartbeat
from temporalio.api.workflowservice import v1 as ws

from renkei.contracts.calls import (
    HEALTH_SERVICE,
    OPERATOR_SERVICE,
    WORKFLOW_SERVICE,
    Policy,
    request_type,
    split_method,
)
from renkei.contracts.names import agency_queue, control_queue, hub_queue, identity_prefix

NS = "default"
X, Y = "city-minato", "city-shibuya"
OWN = f"bpf/{X}/case-1"
OTHERS = f"bpf/{Y}/case-1"


def decide(policy: Policy, party: str, method: str, request=None, service=WORKFLOW_SERVICE):
    return policy.decide(party, service, method, request)


def allowed(policy: Policy, party: str, method: str, request=None, service=WORKFLOW_SERVICE):
    return decide(policy, party, method, request, service).allowed


@pytest.fixture
def policy() -> Policy:
    return Policy(NS)


# -- the requests the tests make (one builder each) ---------------------------------------------


def _start(wid: str = OWN, queue: str = "", **fields) -> ws.StartWorkflowExecutionRequest:
    """X's start of ``wid`` on ``queue`` (default: X's control queue)."""
    return ws.StartWorkflowExecutionRequest(
        namespace=NS,
        workflow_id=wid,
        task_queue=TaskQueue(name=queue or control_queue("p", X)),
        **fields,
    )


def _multi(
    *operations: ws.ExecuteMultiOperationRequest.Operation | ws.StartWorkflowExecutionRequest,
) -> ws.ExecuteMultiOperationRequest:
    """A multi-operation of ``operations`` (a start stands for its operation)."""
    return ws.ExecuteMultiOperationRequest(
        namespace=NS,
        operations=[
            ws.ExecuteMultiOperationRequest.Operation(start_workflow=op)
            if isinstance(op, ws.StartWorkflowExecutionRequest)
            else op
            for op in operations
        ],
    )


def _command(kind: str, **attributes) -> Command:
    """A workflow task's command of ``kind`` (its CommandType name without the prefix, e.g.
    ``START_CHILD_WORKFLOW_EXECUTION``) with the attributes given."""
    field = f"{kind.lower()}_command_attributes"
    return Command(
        command_type=CommandType.Value(f"COMMAND_TYPE_{kind}"),
        **{field: type(getattr(Command(), field))(**attributes)},
    )


def _handed(policy: Policy, party: str, token: bytes = b"wt") -> bytes:
    """``party`` polled and was handed the workflow task ``token``."""
    policy.observe(
        party, "PollWorkflowTaskQueue", ws.PollWorkflowTaskQueueResponse(task_token=token)
    )
    return token


def _completed(
    *commands: Command, sticky: str = "", token: bytes = b"wt"
) -> ws.RespondWorkflowTaskCompletedRequest:
    return ws.RespondWorkflowTaskCompletedRequest(
        namespace=NS,
        task_token=token,
        commands=list(commands),
        sticky_attributes=StickyExecutionAttributes(worker_task_queue=TaskQueue(name=sticky)),
    )


def test_method_paths_split_and_parse() -> None:
    assert split_method(f"/{WORKFLOW_SERVICE}/StartWorkflowExecution") == (
        WORKFLOW_SERVICE,
        "StartWorkflowExecution",
    )
    assert split_method("nonsense") == ("", "")
    assert split_method("/a/b/c") == ("", "")
    assert (
        request_type(WORKFLOW_SERVICE, "StartWorkflowExecution") is ws.StartWorkflowExecutionRequest
    )
    assert request_type(WORKFLOW_SERVICE, "NoSuchMethod") is None
    assert request_type("some.Other", "Check") is None


def test_the_platform_may_make_every_call(policy: Policy) -> None:
    for method in ("ListWorkflowExecutions", "UpdateNamespace", "CreateSchedule", "NoSuchMethod"):
        assert allowed(policy, "hub", method)
    assert allowed(policy, "hub", "AddSearchAttributes", service=OPERATOR_SERVICE)


def test_calls_about_no_one_are_open(policy: Policy) -> None:
    for method in ("GetSystemInfo", "GetClusterInfo", "DescribeNamespace", "GetSearchAttributes"):
        assert allowed(policy, X, method, request_type(WORKFLOW_SERVICE, method)())  # type: ignore[misc]
    assert allowed(policy, X, "ListSearchAttributes", service=OPERATOR_SERVICE)
    assert allowed(policy, X, "Check", service=HEALTH_SERVICE)


@pytest.mark.parametrize(
    "method",
    [
        "CountWorkflowExecutions",
        "ScanWorkflowExecutions",
        "ListOpenWorkflowExecutions",
        "CreateSchedule",
        "UpdateSchedule",
        "DeleteSchedule",
        "ListSchedules",
        "StartBatchOperation",
        "UpdateNamespace",
        "RegisterNamespace",
        "UpdateWorkerVersioningRules",
        "SetWorkerDeploymentCurrentVersion",
        "PauseActivity",
        "UpdateWorkflowExecutionOptions",
        "DescribeTaskQueue",
    ],
)
def test_the_platforms_calls_are_refused_to_an_org(policy: Policy, method: str) -> None:
    request = request_type(WORKFLOW_SERVICE, method)
    assert request is not None
    decision = decide(policy, X, method, request(namespace=NS))
    assert not decision.allowed
    assert (
        decision.reason
        == f"{X} may not call {method}: only the platform calls it (rule: platform only)"
    )


def test_an_unknown_method_or_service_is_refused(policy: Policy) -> None:
    assert not allowed(policy, X, "NoSuchMethod")
    assert not allowed(policy, X, "AddSearchAttributes", service=OPERATOR_SERVICE)
    assert not allowed(
        policy, X, "ServerReflectionInfo", service="grpc.reflection.v1.ServerReflection"
    )


def test_another_namespace_is_refused(policy: Policy) -> None:
    poll = ws.PollActivityTaskQueueRequest(
        namespace="other", task_queue=TaskQueue(name=agency_queue("p", X))
    )
    decision = decide(policy, X, "PollActivityTaskQueue", poll)
    assert not decision.allowed and decision.rule == "namespace"


@pytest.mark.parametrize(
    "method", ["PollWorkflowTaskQueue", "PollActivityTaskQueue", "PollNexusTaskQueue"]
)
def test_an_org_polls_its_own_queues_only(policy: Policy, method: str) -> None:
    kind = request_type(WORKFLOW_SERVICE, method)
    assert kind is not None
    for queue, ok in (
        (control_queue("p", X), True),
        (agency_queue("p", X), True),
        (agency_queue("other-prefix", X), True),
        (agency_queue("p", Y), False),
        (control_queue("p", Y), False),
        (hub_queue("p"), False),
        (control_queue("p"), False),  # the shared queue of runs from before: the hub's
        (f"p.{X}", False),
        ("", False),
    ):
        request = kind(namespace=NS, task_queue=TaskQueue(name=queue))
        assert allowed(policy, X, method, request) is ok, queue


def test_a_sticky_queue_is_for_an_own_queue_its_own_name_and_its_first_claimant(
    policy: Policy,
) -> None:
    def sticky(name: str, normal: str) -> ws.PollWorkflowTaskQueueRequest:
        return ws.PollWorkflowTaskQueueRequest(
            namespace=NS,
            task_queue=TaskQueue(
                name=name, kind=TaskQueueKind.TASK_QUEUE_KIND_STICKY, normal_name=normal
            ),
        )

    x1, x2 = f"{identity_prefix(X)}1@h-a", f"{identity_prefix(X)}1@h-b"
    assert allowed(policy, X, "PollWorkflowTaskQueue", sticky(x1, control_queue("p", X)))
    assert not allowed(
        policy, Y, "PollWorkflowTaskQueue", sticky(f"{identity_prefix(Y)}2", control_queue("p", X))
    )
    # Y for its own queue, but a name of X's: refused whether X claimed it already or not yet
    for name in (x1, x2):
        decision = decide(policy, Y, "PollWorkflowTaskQueue", sticky(name, control_queue("p", Y)))
        assert not decision.allowed and f"begins with '{Y}/'" in decision.reason, name
    # ... nor one that names no party (what any client's default identity gives)
    assert not allowed(policy, Y, "PollWorkflowTaskQueue", sticky("1@h-c", control_queue("p", Y)))
    assert allowed(
        policy, Y, "PollWorkflowTaskQueue", sticky(f"{identity_prefix(Y)}3", control_queue("p", Y))
    )
    assert allowed(policy, X, "PollWorkflowTaskQueue", sticky(x2, control_queue("p", X)))
    # Shutting a worker down names its sticky queue: only the claimant's
    assert not allowed(
        policy, Y, "ShutdownWorker", ws.ShutdownWorkerRequest(namespace=NS, sticky_task_queue=x1)
    )
    assert allowed(
        policy, X, "ShutdownWorker", ws.ShutdownWorkerRequest(namespace=NS, sticky_task_queue=x1)
    )
    assert not allowed(
        policy,
        X,
        "ShutdownWorker",
        ws.ShutdownWorkerRequest(namespace=NS, task_queue=agency_queue("p", Y)),
    )


def test_a_start_is_in_the_orgs_own_name_on_its_control_queue(policy: Policy) -> None:
    for method, kind in (
        ("StartWorkflowExecution", ws.StartWorkflowExecutionRequest),
        ("SignalWithStartWorkflowExecution", ws.SignalWithStartWorkflowExecutionRequest),
    ):
        for wid, queue, ok in (
            (OWN, control_queue("p", X), True),
            (f"scan/bpf/{X}/rule", control_queue("p", X), True),
            (OTHERS, control_queue("p", X), False),
            (OWN, control_queue("p", Y), False),
            (OWN, agency_queue("p", X), False),  # its own, but not a control queue
            ("not-a-renkei-id", control_queue("p", X), False),
        ):
            request = kind(namespace=NS, workflow_id=wid, task_queue=TaskQueue(name=queue))
            assert allowed(policy, X, method, request) is ok, (method, wid, queue)


def test_multi_operations_are_each_checked(policy: Policy) -> None:
    def multi(update_wid: str) -> ws.ExecuteMultiOperationRequest:
        update = ws.UpdateWorkflowExecutionRequest(
            namespace=NS, workflow_execution=WorkflowExecution(workflow_id=update_wid)
        )
        return _multi(_start(), ws.ExecuteMultiOperationRequest.Operation(update_workflow=update))

    assert allowed(policy, X, "ExecuteMultiOperation", multi(OWN))
    assert not allowed(policy, X, "ExecuteMultiOperation", multi(OTHERS))


def _on_flow(method: str, wid: str):
    run = WorkflowExecution(workflow_id=wid)
    kind = request_type(WORKFLOW_SERVICE, method)
    assert kind is not None
    fields = kind.DESCRIPTOR.fields_by_name
    if "workflow_execution" in fields:
        return kind(namespace=NS, workflow_execution=run)
    if "execution" in fields:
        return kind(namespace=NS, execution=run)
    if "update_ref" in fields:
        return kind(namespace=NS, update_ref=UpdateRef(workflow_execution=run))
    return kind(namespace=NS, workflow_id=wid)


@pytest.mark.parametrize(
    "method",
    [
        "SignalWorkflowExecution",
        "UpdateWorkflowExecution",
        "PollWorkflowExecutionUpdate",
        "QueryWorkflow",
        "DescribeWorkflowExecution",
        "GetWorkflowExecutionHistory",
        "GetWorkflowExecutionHistoryReverse",
        "TerminateWorkflowExecution",
        "RequestCancelWorkflowExecution",
        "ResetWorkflowExecution",
        "DeleteWorkflowExecution",
        "ResetStickyTaskQueue",
        "RecordActivityTaskHeartbeatById",
        "RespondActivityTaskCompletedById",
        "RespondActivityTaskFailedById",
        "RespondActivityTaskCanceledById",
    ],
)
def test_an_org_acts_on_its_own_flows_only(policy: Policy, method: str) -> None:
    assert allowed(policy, X, method, _on_flow(method, OWN))
    assert allowed(policy, X, method, _on_flow(method, f"scan/bpf/{X}/rule"))
    decision = decide(policy, X, method, _on_flow(method, OTHERS))
    assert not decision.allowed and decision.rule == "own flows"
    assert OTHERS in decision.reason
    assert not allowed(policy, X, method, _on_flow(method, ""))


def _poll_answer(token: bytes) -> ws.PollActivityTaskQueueResponse:
    return ws.PollActivityTaskQueueResponse(task_token=token)


@pytest.mark.parametrize(
    "method",
    [
        "RespondWorkflowTaskCompleted",
        "RespondWorkflowTaskFailed",
        "RespondQueryTaskCompleted",
        "RecordActivityTaskHeartbeat",
        "RespondActivityTaskCompleted",
        "RespondActivityTaskFailed",
        "RespondActivityTaskCanceled",
        "RespondNexusTaskCompleted",
        "RespondNexusTaskFailed",
    ],
)
def test_a_task_is_answered_with_a_token_handed_to_the_party(policy: Policy, method: str) -> None:
    kind = request_type(WORKFLOW_SERVICE, method)
    assert kind is not None
    policy.observe(X, "PollActivityTaskQueue", _poll_answer(b"token-x"))
    assert not allowed(policy, Y, method, kind(namespace=NS, task_token=b"token-x"))
    assert not allowed(policy, X, method, kind(namespace=NS, task_token=b"made-up"))
    assert not allowed(policy, X, method, kind(namespace=NS, task_token=b""))
    assert allowed(policy, X, method, kind(namespace=NS, task_token=b"token-x"))
    # An answer that ends the task forgets its token; a heartbeat does not.
    again = allowed(policy, X, method, kind(namespace=NS, task_token=b"token-x"))
    assert again is (method == "RecordActivityTaskHeartbeat")


def test_tokens_come_from_every_answer_that_hands_one_out(policy: Policy) -> None:
    completed = ws.RespondWorkflowTaskCompletedResponse(
        workflow_task=ws.PollWorkflowTaskQueueResponse(task_token=b"next"),
        activity_tasks=[ws.PollActivityTaskQueueResponse(task_token=b"eager")],
    )
    policy.observe(X, "RespondWorkflowTaskCompleted", completed)
    policy.observe(
        X,
        "StartWorkflowExecution",
        ws.StartWorkflowExecutionResponse(
            eager_workflow_task=ws.PollWorkflowTaskQueueResponse(task_token=b"eager-wf")
        ),
    )
    policy.observe(X, "PollWorkflowTaskQueue", ws.PollWorkflowTaskQueueResponse())  # empty: none
    assert all(policy.holds(X, t) for t in (b"next", b"eager", b"eager-wf"))
    assert not policy.holds(X, b"")
    assert not policy.holds(Y, b"next")


def test_tokens_are_kept_in_bounded_memory() -> None:
    policy = Policy(NS, tokens_kept=3)
    for n in range(5):
        policy.observe(X, "PollActivityTaskQueue", _poll_answer(b"t%d" % n))
    assert [policy.holds(X, b"t%d" % n) for n in range(5)] == [False, False, True, True, True]


def test_a_workflow_tasks_commands_reach_only_the_orgs_own_flows(policy: Policy) -> None:
    own_queue, others_queue = (
        TaskQueue(name=control_queue("p", X)),
        TaskQueue(name=control_queue("p", Y)),
    )
    child, signal = "START_CHILD_WORKFLOW_EXECUTION", "SIGNAL_EXTERNAL_WORKFLOW_EXECUTION"
    cases = [
        (_command(child, workflow_id=OWN, task_queue=own_queue), True),
        (_command(child, workflow_id=OTHERS, task_queue=own_queue), False),
        (_command(child, workflow_id=OWN, task_queue=others_queue), False),
        (_command(signal, execution=WorkflowExecution(workflow_id=OWN)), True),
        (_command(signal, execution=WorkflowExecution(workflow_id=OTHERS)), False),
        (_command("REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION", workflow_id=OTHERS), False),
        (_command("CONTINUE_AS_NEW_WORKFLOW_EXECUTION", task_queue=others_queue), False),
        (_command("CONTINUE_AS_NEW_WORKFLOW_EXECUTION"), True),
        # A linkage's activity goes to the provider's queue: that is how flows ask others.
        (_command("SCHEDULE_ACTIVITY_TASK", task_queue=TaskQueue(name=agency_queue("p", Y))), True),
    ]
    for command, ok in cases:
        _handed(policy, X)
        assert allowed(policy, X, "RespondWorkflowTaskCompleted", _completed(command)) is ok, (
            command
        )


def test_a_completions_sticky_queue_is_claimed_like_a_polls(policy: Policy) -> None:
    mine = f"{identity_prefix(Y)}sticky"
    _handed(policy, Y)
    assert allowed(policy, Y, "RespondWorkflowTaskCompleted", _completed(sticky=mine))
    _handed(policy, X)
    decision = decide(policy, X, "RespondWorkflowTaskCompleted", _completed(sticky=mine))
    assert not decision.allowed and f"begins with '{X}/'" in decision.reason


def test_worker_heartbeats_name_own_queues_only(policy: Policy) -> None:
    def beat(queue: str) -> ws.RecordWorkerHeartbeatRequest:
        return ws.RecordWorkerHeartbeatRequest(
            namespace=NS, worker_heartbeat=[WorkerHeartbeat(task_queue=queue)]
        )

    assert allowed(policy, X, "RecordWorkerHeartbeat", beat(control_queue("p", X)))
    assert not allowed(policy, X, "RecordWorkerHeartbeat", beat(agency_queue("p", Y)))


def test_an_org_lists_only_runs_it_is_the_executor_of(policy: Policy) -> None:
    def listing(query: str) -> ws.ListWorkflowExecutionsRequest:
        return ws.ListWorkflowExecutionsRequest(namespace=NS, query=query)

    own = f"RenkeiExecutor = '{X}'"
    for query, ok in (
        (f"{own} AND RenkeiConformance IS NULL", True),  # as RenkeiClient.runs writes it
        (f"RenkeiBpf = 'child-allowance-check' AND {own} AND RenkeiWaitingFor IS NOT NULL", True),
        ("RenkeiBpf IS NOT NULL AND RenkeiConformance IS NULL", False),  # everyone's
        (f"RenkeiExecutor = '{Y}' AND RenkeiConformance IS NULL", False),
        (f"{own} OR RenkeiExecutor = '{Y}'", False),
        (f"{own} AND (RenkeiBpf IS NOT NULL OR WorkflowId = 'x')", False),
        (f"{own} AND RenkeiBpf = 'a' OR RenkeiBpf = 'b'", False),
        (f"{own} AND WorkflowId = 'x' OR 'y' = 'y'", False),
        ("", False),
    ):
        decision = decide(policy, X, "ListWorkflowExecutions", listing(query))
        assert decision.allowed is ok, query
        assert ok or decision.rule == "own runs listed"


def _executor(value: bytes) -> SearchAttributes:
    """Search attributes setting RenkeiExecutor to the JSON ``value``, as an SDK writes them."""
    return SearchAttributes(
        indexed_fields={
            "RenkeiExecutor": Payload(
                metadata={"encoding": b"json/plain", "type": b"Keyword"}, data=value
            ),
            "RenkeiBpf": Payload(metadata={"encoding": b"json/plain"}, data=b'"bpf"'),
        }
    )


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b'"city-minato"', True),
        (b'["city-minato"]', True),
        (b'"city-shibuya"', False),
        (b'["city-minato", "city-shibuya"]', False),
        (b"not json", False),
    ],
)
def test_an_org_sets_no_other_executor_on_its_flows(policy: Policy, value: bytes, ok: bool) -> None:
    """A start, a child, a continuation or an upsert may name the org itself as executor (so
    it lists as its run), never another (whose listing of its runs would then show it)."""
    attributes = _executor(value)
    start = _start(search_attributes=attributes)
    assert allowed(policy, X, "StartWorkflowExecution", start) is ok
    assert allowed(policy, X, "ExecuteMultiOperation", _multi(start)) is ok
    for command in (
        _command("START_CHILD_WORKFLOW_EXECUTION", workflow_id=OWN, search_attributes=attributes),
        _command("CONTINUE_AS_NEW_WORKFLOW_EXECUTION", search_attributes=attributes),
        _command("UPSERT_WORKFLOW_SEARCH_ATTRIBUTES", search_attributes=attributes),
    ):
        done = _completed(command, token=_handed(policy, X, uuid.uuid4().bytes))
        assert allowed(policy, X, "RespondWorkflowTaskCompleted", done) is ok, command


def test_an_org_names_no_completion_callback_and_calls_no_nexus_operation(policy: Policy) -> None:
    """A completion callback is a URL the frontend calls from inside the platform's network
    when the flow ends, and a Nexus operation reaches whatever queue its endpoint names:
    renkei's flows use neither, so an org's are refused."""
    start = _start(
        completion_callbacks=[Callback(nexus=Callback.Nexus(url="http://frontend:7243/api"))]
    )
    assert not allowed(policy, X, "StartWorkflowExecution", start)
    assert not allowed(policy, X, "ExecuteMultiOperation", _multi(start))
    start.ClearField("completion_callbacks")
    assert allowed(policy, X, "StartWorkflowExecution", start)
    nexus = _command("SCHEDULE_NEXUS_OPERATION", endpoint="any", service="s", operation="o")
    done = _completed(nexus, token=_handed(policy, X, uuid.uuid4().bytes))
    assert not allowed(policy, X, "RespondWorkflowTaskCompleted", done)
