"""What the kit's own control workers are doing with its flows, seen from inside the process.

The kit acts only when a scenario's flows are quiet (:mod:`renkei.app.kit.clock`). The server
shows most of it: a workflow task to do, an activity in flight. Not a local activity: over the
direct channel (``RENKEI_LINKAGE_TRANSPORT=direct``) a linkage is a local activity of the flow,
and while one runs the worker holds the flow's workflow task open (it heartbeats it), so the
server shows a workflow task in flight for as long as a stub is parked on the kit's clock; and
what the flow does when a local activity ends happens in the worker, with nothing on the server
until the task completes.

So the kit's control workers run their flows through :class:`FlowWatch`'s workflow runner, which
sees every activation as the worker runs it: which activities (local or not) each flow has
asked for and not yet been given an end of, whether an activation is running, and how many
activations (other than queries) each flow has taken. The kit reads it between two snapshots of
the server: a flow is quiet when no activation runs, each of its activities is either one the
server shows in flight or a local activity whose stub is parked, and it took no activation
between the two snapshots.

The watch also reads a flow's kit clock in the process (:meth:`FlowWatch.read`): a query through
the server waits while the worker holds the flow's task open for a local activity, until the
SDK's heartbeat of that task (8 s of its 10 s timeout), and the kit reads the clock each time
the flows are quiet. The watch hands the flow's own instance the same query activation the
worker would (query jobs only, which change nothing), between two of the worker's calls into
the instance, never during one, and only after an activation the instance completed.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import (
    QueryWorkflow,
    WorkflowActivation,
    WorkflowActivationJob,
)
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import SerializationContext, StorageDriverStoreContext
from temporalio.plugin import SimplePlugin
from temporalio.worker import (
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.workflow import Info, _Definition

__all__ = ["FlowState", "FlowWatch"]

READ_WAIT = 1.0  # seconds a read waits for the worker's call into the flow's instance

_ENDS = (
    "complete_workflow_execution",
    "fail_workflow_execution",
    "cancel_workflow_execution",
    "continue_as_new_workflow_execution",
)


@dataclass
class FlowState:
    """One flow as the kit's workers run it."""

    activations: int = 0  # activations taken, other than queries alone
    remote: dict[int, str] = field(default_factory=dict)  # activity seq -> activity id
    local: dict[int, str] = field(default_factory=dict)  # local activity seq -> activity id


class FlowWatch:
    """The kit's flows, as its control workers run them (a runner wrapping theirs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._flows: dict[str, FlowState] = {}
        # each flow's instance in its worker (gone when the worker evicts it)
        self._instances: weakref.WeakValueDictionary[str, _Instance] = weakref.WeakValueDictionary()

    def plugin(self) -> SimplePlugin:
        """The worker plugin that runs a control worker's flows watched."""
        return _WatchPlugin("renkei.kit.watch", workflow_runner=self.runner)

    def runner(self, inner: WorkflowRunner | None) -> WorkflowRunner:
        """The workflow runner of a kit's control worker: ``inner`` (the worker's), watched."""
        if inner is None:
            raise ValueError("the kit watches a worker's own workflow runner: it has none")
        return _Runner(inner, self)

    @property
    def running(self) -> bool:
        """Whether an activation of any of the kit's flows is being run now."""
        with self._lock:
            return self._running > 0

    def state(self, workflow_id: str) -> FlowState:
        """A copy of ``workflow_id``'s state (empty if its worker has not run it)."""
        with self._lock:
            found = self._flows.get(workflow_id, FlowState())
            return FlowState(found.activations, dict(found.remote), dict(found.local))

    def read(self, workflow_id: str, query: str) -> Payload | None:
        """Ask ``workflow_id``'s instance the query ``query`` (no arguments) in this process, as
        its worker would: its answer as the flow's payload converter wrote it, or None if the
        worker holds no instance of it, none has run yet, or the query failed. Blocks while
        one of the worker's activations of the flow runs (call it off the event loop)."""
        with self._lock:
            instance = self._instances.get(workflow_id)
        return None if instance is None else instance.read(query)

    def _started(self, workflow_id: str) -> None:
        with self._lock:
            self._running += 1
            # a new instance of the flow (first run, or after eviction) replays from the start:
            # it is given every activity's end again
            self._flows[workflow_id] = FlowState(
                self._flows.get(workflow_id, FlowState()).activations
            )

    def _enter(self) -> None:
        with self._lock:
            self._running += 1

    def _done(
        self,
        workflow_id: str,
        act: WorkflowActivation,
        completion: WorkflowActivationCompletion | None,
    ) -> None:
        with self._lock:
            self._running -= 1
            flow = self._flows.setdefault(workflow_id, FlowState())
            if any(not job.HasField("query_workflow") for job in act.jobs):
                flow.activations += 1
            for job in act.jobs:
                if job.HasField("resolve_activity"):
                    flow.remote.pop(job.resolve_activity.seq, None)
                    flow.local.pop(job.resolve_activity.seq, None)
            if completion is None or not completion.HasField("successful"):
                return
            for command in completion.successful.commands:
                kind = command.WhichOneof("variant")
                if kind == "schedule_activity":
                    s = command.schedule_activity
                    flow.remote[s.seq] = s.activity_id
                elif kind == "schedule_local_activity":
                    a = command.schedule_local_activity
                    flow.local[a.seq] = a.activity_id
                elif kind in _ENDS:
                    flow.remote.clear()
                    flow.local.clear()


class _WatchPlugin(SimplePlugin):
    """A plugin type of its own (the SDK warns of two plugins of one type on a worker)."""


class _Runner(WorkflowRunner):
    def __init__(self, inner: WorkflowRunner, watch: FlowWatch) -> None:
        self._inner = inner
        self._watch = watch

    def prepare_workflow(self, defn: _Definition) -> None:
        self._inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = _Instance(self._inner.create_instance(det), det.info.workflow_id, self._watch)
        with self._watch._lock:
            self._watch._instances[det.info.workflow_id] = instance
        return instance

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        self._inner.set_worker_level_failure_exception_types(types)


class _Instance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, workflow_id: str, watch: FlowWatch) -> None:
        self._inner = inner
        self._workflow_id = workflow_id
        self._watch = watch
        self._fresh = True
        # one call into the instance at a time: the worker's (an activation, a payload's
        # context, which a sandboxed instance runs in the same sandbox), or a read of the
        # watch's between two
        self._turn = threading.RLock()
        self._last: WorkflowActivation | None = None  # the worker's last activation...
        self._last_ok = False  # ...and whether the instance completed it
        self._reads = 0

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        with self._turn:
            if self._fresh:
                self._fresh = False
                self._watch._started(self._workflow_id)
            else:
                self._watch._enter()
            completion: WorkflowActivationCompletion | None = None
            try:
                completion = self._inner.activate(act)
                return completion
            finally:
                self._last = act
                self._last_ok = completion is not None and completion.HasField("successful")
                self._watch._done(self._workflow_id, act, completion)

    def read(self, query: str) -> Payload | None:
        # An activation that takes longer than this is stuck or on a machine far too busy: the
        # kit then asks the server, as it would without the watch.
        if not self._turn.acquire(timeout=READ_WAIT):
            return None
        try:
            last = self._last
            if (
                last is None
                or not self._last_ok  # what it left half done would run in the query
                or any(job.HasField("remove_from_cache") for job in last.jobs)
            ):
                return None
            self._reads += 1
            act = WorkflowActivation()
            act.CopyFrom(last)  # the same time, history and flags: the flow as it last ran
            del act.jobs[:]
            act.is_replaying = False
            act.jobs.append(
                WorkflowActivationJob(
                    query_workflow=QueryWorkflow(
                        query_id=f"renkei.kit.watch/{self._reads}", query_type=query
                    )
                )
            )
            completion = self._inner.activate(act)
        finally:
            self._turn.release()
        if not completion.HasField("successful"):
            return None
        for command in completion.successful.commands:
            if command.HasField("respond_to_query") and command.respond_to_query.HasField(
                "succeeded"
            ):
                return command.respond_to_query.succeeded.response
        return None

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        with self._turn:
            return self._inner.get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        with self._turn:
            return self._inner.get_external_store_context(command_info)

    def get_info(self) -> Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()
