"""Which party may make which Temporal call: the policy of ``renkei gateway``.

The Temporal frontend authorises no call: whoever reaches it may poll any queue, start, signal
or terminate any flow, complete a task it never received. ``renkei gateway`` stands in front of
it, knows each caller's party from its client certificate, and asks :meth:`Policy.decide` about
every call before forwarding it. The policy is pure (no I/O): a call's method name and its
parsed request in, :class:`Decision` out; what it remembers (the task tokens it saw handed to a
party, the sticky queues a party claimed) it learns from :meth:`Policy.observe` and
:meth:`Policy.decide` alone, in bounded memory.

The rules, deny by default (a method not named here is refused to every org):

- the platform (:data:`~renkei.contracts.names.HUB`) may make every call: it runs the frontend
  and everything it reads stays sealed;
- an org X may read what names no one (system, cluster and namespace info, search attributes);
  poll only its own queues (its control queue, its agency queue), a sticky queue only for one
  of them, only one whose name begins with X's identity prefix (``X/``, as X's workers' names do:
  :func:`~renkei.contracts.names.identity_prefix`) and only one it claimed first; start a flow only with an id whose executor is X, on
  X's control queue; act on a flow (signal, update, query, describe, read its history,
  terminate, cancel, reset, delete; an activity ``...ById``) only if its id names X; answer a
  task (complete, fail, heartbeat, answer a query) only with a token the gateway handed to X;
  and a workflow task's commands may start children, signal or cancel other flows only within
  X's own flows; a start, a child, a continuation or an upsert of search attributes may set
  the executor attribute (``RenkeiExecutor``) to X only; a start names no completion
  callback and a flow calls no Nexus operation (renkei uses neither); it may list flows only with a query naming X as their executor (its own API's
  list of its runs). Counting and scanning flows, other listings, schedules, batches, the namespace, the
  operator service and worker versioning are the platform's.

A denial names the party, the method and the rule, and nothing of a payload.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from cachetools import LRUCache
from google.protobuf.message import Message
from temporalio.api.command.v1 import Command
from temporalio.api.common.v1 import SearchAttributes
from temporalio.api.enums.v1 import CommandType, TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice import v1 as ws

from renkei.contracts.names import HUB, executor_of, identity_prefix, party_of_queue
from renkei.kernel.search_attributes import EXECUTOR

WORKFLOW_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
OPERATOR_SERVICE = "temporal.api.operatorservice.v1.OperatorService"
HEALTH_SERVICE = "grpc.health.v1.Health"

# Calls about no one: what every SDK client asks when it connects, and reads of the namespace's
# shape. Allowed to every party.
OPEN = frozenset(
    {
        "GetSystemInfo",
        "GetClusterInfo",
        "DescribeNamespace",
        "GetSearchAttributes",
        "ListSearchAttributes",  # the operator service's read of the same
        "Check",  # the health service
    }
)

POLLS = frozenset({"PollWorkflowTaskQueue", "PollActivityTaskQueue", "PollNexusTaskQueue"})

# Calls on one flow, found by the workflow id they name.
ON_A_FLOW = frozenset(
    {
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
    }
)

STARTS = frozenset({"StartWorkflowExecution", "SignalWithStartWorkflowExecution"})

# Answers to a task received in a poll, found by its token. The second element: whether the
# answer ends the task (its token is then forgotten).
BY_TOKEN: dict[str, bool] = {
    "RespondWorkflowTaskCompleted": True,
    "RespondWorkflowTaskFailed": True,
    "RespondQueryTaskCompleted": True,
    "RecordActivityTaskHeartbeat": False,
    "RespondActivityTaskCompleted": True,
    "RespondActivityTaskFailed": True,
    "RespondActivityTaskCanceled": True,
    "RespondNexusTaskCompleted": True,
    "RespondNexusTaskFailed": True,
}

# One term of a visibility query an org may send: a search attribute equal to an id, or (not)
# null. The terms are joined by AND only (as ``RenkeiClient.runs`` writes them).
LIST_TERM = re.compile(r"[A-Za-z][A-Za-z0-9_]* (= '[A-Za-z0-9._:-]+'|IS NULL|IS NOT NULL)")


def lists_only_own(party: str, query: str) -> bool:
    """Whether a visibility query is a plain conjunction that names ``party`` as the executor:
    it then lists only runs of ``party`` (an executor's own API or SDK listing its runs)."""
    terms = query.split(" AND ")
    return all(LIST_TERM.fullmatch(t) for t in terms) and f"{EXECUTOR.name} = '{party}'" in terms


# How many task tokens and sticky queues the gateway remembers (least recently used forgotten
# first). A task whose token was forgotten (or a gateway restarted in between) cannot be
# answered through the gateway: it times out and Temporal retries it.
TOKENS_KEPT = 200_000
STICKY_KEPT = 20_000


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str = ""


def _allow(rule: str) -> Decision:
    return Decision(True, rule)


def _deny(party: str, method: str, rule: str, why: str) -> Decision:
    return Decision(False, rule, f"{party} may not call {method[:100]}: {why} (rule: {rule})")


def split_method(path: str) -> tuple[str, str]:
    """``/package.Service/Method`` → (service, method); ("", "") for anything else."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return "", ""
    return parts[1], parts[2]


def request_type(service: str, method: str) -> type[Message] | None:
    """The protobuf class of ``method``'s request (``None``: not a call the gateway parses)."""
    if service == WORKFLOW_SERVICE:
        found = getattr(ws, f"{method}Request", None)
    elif service == OPERATOR_SERVICE:
        from temporalio.api.operatorservice import v1 as ops

        found = getattr(ops, f"{method}Request", None)
    else:
        return None
    return found if isinstance(found, type) and issubclass(found, Message) else None


def response_type(service: str, method: str) -> type[Message] | None:
    """The protobuf class of ``method``'s response, for the answers whose tokens count."""
    if service != WORKFLOW_SERVICE:
        return None
    found = getattr(ws, f"{method}Response", None)
    return found if isinstance(found, type) and issubclass(found, Message) else None


def workflow_id_of(request: Message) -> str:
    """The workflow id a call on one flow names ('' if none)."""
    for name in ("workflow_execution", "execution"):
        if name in request.DESCRIPTOR.fields_by_name:
            return str(getattr(request, name).workflow_id)
    if "update_ref" in request.DESCRIPTOR.fields_by_name:
        return str(request.update_ref.workflow_execution.workflow_id)  # type: ignore[attr-defined]
    if "workflow_id" in request.DESCRIPTOR.fields_by_name:
        return str(request.workflow_id)  # type: ignore[attr-defined]
    return ""


def _names_another_executor(party: str, attributes: SearchAttributes) -> str:
    """What is wrong with search attributes an org sets on its flow ('' if nothing): the
    executor attribute, if set, names the org itself (or another's listing of its runs, and the
    platform's, would show the org's flow as theirs)."""
    found = attributes.indexed_fields.get(EXECUTOR.name)
    if found is None:
        return ""
    try:
        value = json.loads(found.data)
    except ValueError:
        return f"an unreadable {EXECUTOR.name}"
    if (value if isinstance(value, list) else [value]) != [party]:
        return f"{EXECUTOR.name} naming another executor"
    return ""


def _own_queue(party: str, name: str) -> bool:
    """Whether ``name`` is one of an org's queues: its control queue or its agency queue."""
    return (".control." in name or ".agency." in name) and party_of_queue(name) == party


@dataclass
class Policy:
    """The gateway's policy for one namespace; remembers tokens and sticky queues it saw."""

    namespace: str
    tokens_kept: int = TOKENS_KEPT
    sticky_kept: int = STICKY_KEPT
    _tokens: LRUCache[bytes, str] = field(init=False)
    _sticky: LRUCache[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = LRUCache(self.tokens_kept)
        self._sticky = LRUCache(self.sticky_kept)

    # -- what the gateway learns from answers -------------------------------------------------

    def observe(self, party: str, method: str, response: Message) -> None:
        """Remember the task tokens ``response`` hands to ``party``."""
        found: list[bytes] = []
        if method in POLLS:
            found.append(response.task_token)  # type: ignore[attr-defined]
        elif method == "RespondWorkflowTaskCompleted":
            assert isinstance(response, ws.RespondWorkflowTaskCompletedResponse)
            found.append(response.workflow_task.task_token)
            found.extend(t.task_token for t in response.activity_tasks)
        elif method == "StartWorkflowExecution":
            assert isinstance(response, ws.StartWorkflowExecutionResponse)
            found.append(response.eager_workflow_task.task_token)
        for token in found:
            if token:
                self._tokens[token] = party

    def holds(self, party: str, token: bytes) -> bool:
        """Whether ``token`` was handed to ``party`` (and is still remembered)."""
        return self._tokens.get(token) == party

    def _claim_sticky(self, party: str, name: str) -> str:
        """Why ``party`` may not claim the sticky queue ``name`` ('' if it may, and now has)."""
        if not name.startswith(identity_prefix(party)):
            return f"a sticky queue's name begins with {identity_prefix(party)!r}"
        owner = self._sticky.get(name)
        if owner is not None and owner != party:
            return "sticky queue claimed by another"
        self._sticky[name] = party
        return ""

    # -- the decision ---------------------------------------------------------------------------

    def decide(self, party: str, service: str, method: str, request: Message | None) -> Decision:
        """May ``party`` make this call? ``request``: the parsed request (``None`` for a
        service the gateway does not parse)."""
        if party == HUB:
            return _allow("the platform")
        if method in OPEN and service in (WORKFLOW_SERVICE, OPERATOR_SERVICE, HEALTH_SERVICE):
            return _allow("open")
        if request is None or service != WORKFLOW_SERVICE:
            return _deny(party, method, "platform only", "only the platform calls it")
        namespace = getattr(request, "namespace", None)
        if namespace is not None and namespace != self.namespace:
            return _deny(party, method, "namespace", f"namespace {namespace!r} is not renkei's")
        if method in POLLS:
            return self._poll(party, method, request)
        if method in STARTS:
            return self._start(party, method, request)
        if method in ON_A_FLOW:
            wid = workflow_id_of(request)
            if executor_of(wid) != party:
                return _deny(party, method, "own flows", f"workflow {wid!r} is not {party}'s")
            return _allow("own flows")
        if method in BY_TOKEN:
            return self._answer(party, method, request)
        if method == "ExecuteMultiOperation":
            return self._multi(party, method, request)
        if method == "ListWorkflowExecutions":
            # An executor's own API or SDK lists its runs (``renkei runs --executor ORG``,
            # ``RenkeiClient.runs``): allowed for a query that names it as executor, nothing else.
            assert isinstance(request, ws.ListWorkflowExecutionsRequest)
            if lists_only_own(party, request.query):
                return _allow("own runs listed")
            return _deny(
                party,
                method,
                "own runs listed",
                f"the query must be terms joined by AND, one of them {EXECUTOR.name} = '{party}'",
            )
        if method == "ShutdownWorker":
            return self._shutdown(party, method, request)
        if method == "RecordWorkerHeartbeat":
            assert isinstance(request, ws.RecordWorkerHeartbeatRequest)
            for beat in request.worker_heartbeat:
                if beat.task_queue and not _own_queue(party, beat.task_queue):
                    return _deny(party, method, "own queues", f"{beat.task_queue!r} is not theirs")
            return _allow("own queues")
        return _deny(party, method, "platform only", "only the platform calls it")

    def _poll(self, party: str, method: str, request: Message) -> Decision:
        queue: TaskQueue = request.task_queue  # type: ignore[attr-defined]
        if queue.kind == TaskQueueKind.TASK_QUEUE_KIND_STICKY:
            if not _own_queue(party, queue.normal_name):
                return _deny(party, method, "own queues", f"sticky queue for {queue.normal_name!r}")
            if problem := self._claim_sticky(party, queue.name):
                return _deny(party, method, "own queues", problem)
            return _allow("own queues")
        if not _own_queue(party, queue.name):
            return _deny(party, method, "own queues", f"task queue {queue.name!r} is not theirs")
        return _allow("own queues")

    def _start(self, party: str, method: str, request: Message) -> Decision:
        wid = str(request.workflow_id)  # type: ignore[attr-defined]
        queue = str(request.task_queue.name)  # type: ignore[attr-defined]
        if executor_of(wid) != party:
            return _deny(party, method, "own starts", f"workflow {wid!r} names another executor")
        if ".control." not in queue or party_of_queue(queue) != party:
            return _deny(party, method, "own starts", f"task queue {queue!r} is not its control")
        attributes: SearchAttributes = request.search_attributes  # type: ignore[attr-defined]
        if problem := _names_another_executor(party, attributes):
            return _deny(party, method, "own starts", problem)
        if "completion_callbacks" in request.DESCRIPTOR.fields_by_name and len(
            request.completion_callbacks  # type: ignore[attr-defined]
        ):
            # The frontend would call the URL when the flow ends, from inside the platform's
            # network: renkei's flows name none, and an org names none either.
            return _deny(party, method, "own starts", "a completion callback")
        return _allow("own starts")

    def _answer(self, party: str, method: str, request: Message) -> Decision:
        token = bytes(request.task_token)  # type: ignore[attr-defined]
        if not self.holds(party, token):
            return _deny(party, method, "own tasks", "a task token the gateway did not hand it")
        if method == "RespondWorkflowTaskCompleted":
            assert isinstance(request, ws.RespondWorkflowTaskCompletedRequest)
            sticky = request.sticky_attributes.worker_task_queue
            if sticky.name and (problem := self._claim_sticky(party, sticky.name)):
                return _deny(party, method, "own queues", problem)
            for command in request.commands:
                if problem := self._command(party, command):
                    return _deny(party, method, "own flows", problem)
        if BY_TOKEN[method]:
            self._tokens.pop(token, None)
        # (else: kept, and its use counts as recent: holds() read it)
        return _allow("own tasks")

    def _command(self, party: str, command: Command) -> str:
        """What is wrong with a workflow task's command of ``party``'s flow ('' if nothing):
        a child, a signal or a cancellation reaches only ``party``'s own flows."""
        kind = command.command_type
        if kind == CommandType.COMMAND_TYPE_START_CHILD_WORKFLOW_EXECUTION:
            child = command.start_child_workflow_execution_command_attributes
            if executor_of(child.workflow_id) != party:
                return f"child workflow {child.workflow_id!r} names another executor"
            if child.task_queue.name and not _own_queue(party, child.task_queue.name):
                return f"child on task queue {child.task_queue.name!r}"
            return _names_another_executor(party, child.search_attributes)
        elif kind == CommandType.COMMAND_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION:
            target = command.signal_external_workflow_execution_command_attributes.execution
            if executor_of(target.workflow_id) != party:
                return f"signal to workflow {target.workflow_id!r}"
        elif kind == CommandType.COMMAND_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION:
            cancel = command.request_cancel_external_workflow_execution_command_attributes
            if executor_of(cancel.workflow_id) != party:
                return f"cancellation of workflow {cancel.workflow_id!r}"
        elif kind == CommandType.COMMAND_TYPE_CONTINUE_AS_NEW_WORKFLOW_EXECUTION:
            again = command.continue_as_new_workflow_execution_command_attributes
            if again.task_queue.name and not _own_queue(party, again.task_queue.name):
                return f"continued on task queue {again.task_queue.name!r}"
            return _names_another_executor(party, again.search_attributes)
        elif kind == CommandType.COMMAND_TYPE_SCHEDULE_NEXUS_OPERATION:
            # A Nexus endpoint reaches whatever queue the platform made it for: renkei's flows
            # call none, so an org's flow calls none either.
            return "a Nexus operation"
        elif kind == CommandType.COMMAND_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            upsert = command.upsert_workflow_search_attributes_command_attributes
            return _names_another_executor(party, upsert.search_attributes)
        return ""

    def _multi(self, party: str, method: str, request: Message) -> Decision:
        assert isinstance(request, ws.ExecuteMultiOperationRequest)
        for op in request.operations:
            if op.HasField("start_workflow"):
                found = self._start(party, method, op.start_workflow)
            elif op.HasField("update_workflow"):
                wid = op.update_workflow.workflow_execution.workflow_id
                found = (
                    _allow("own flows")
                    if executor_of(wid) == party
                    else _deny(party, method, "own flows", f"workflow {wid!r} is not {party}'s")
                )
            else:
                found = _deny(party, method, "platform only", "an operation it does not know")
            if not found.allowed:
                return found
        return _allow("own starts")

    def _shutdown(self, party: str, method: str, request: Message) -> Decision:
        assert isinstance(request, ws.ShutdownWorkerRequest)
        if request.task_queue and not _own_queue(party, request.task_queue):
            return _deny(party, method, "own queues", f"{request.task_queue!r} is not theirs")
        sticky = request.sticky_task_queue
        if sticky and not sticky.startswith(identity_prefix(party)):
            return _deny(party, method, "own queues", f"sticky queue {sticky!r} is not theirs")
        owner = self._sticky.get(sticky)
        if sticky and owner is not None and owner != party:
            return _deny(party, method, "own queues", "sticky queue claimed by another")
        return _allow("own queues")
