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
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
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
        return _Instance(self._inner.create_instance(det), det.info.workflow_id, self._watch)

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

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
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
            self._watch._done(self._workflow_id, act, completion)

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> Info:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()
