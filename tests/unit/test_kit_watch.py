"""The kit's watch of its flows (:mod:`renkei.app.kit.watch`), fed activations by hand: which
activities each flow waits on, local or not, and how many activations it took."""

from __future__ import annotations

from typing import Any

from temporalio.bridge.proto.workflow_activation import WorkflowActivation, WorkflowActivationJob
from temporalio.bridge.proto.workflow_commands import WorkflowCommand
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion

from renkei.app.kit.watch import FlowWatch


class _Inner:
    """A flow's instance that answers each activation with the commands it is given."""

    def __init__(self) -> None:
        self.next: list[WorkflowCommand] = []
        self.seen_running: list[bool] = []
        self.watch: FlowWatch | None = None

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        assert self.watch is not None
        self.seen_running.append(self.watch.running)
        done = WorkflowActivationCompletion(run_id=act.run_id)
        done.successful.commands.extend(self.next)
        self.next = []
        return done


class _Runner:
    def __init__(self, inner: _Inner) -> None:
        self.inner = inner

    def create_instance(self, det: Any) -> _Inner:
        return self.inner


class _Details:
    class info:  # the shape of WorkflowInstanceDetails.info
        workflow_id = "bpf/city-minato/case-1"


def _flow() -> tuple[FlowWatch, _Inner, Any]:
    watch = FlowWatch()
    inner = _Inner()
    inner.watch = watch
    instance = watch.runner(_Runner(inner)).create_instance(_Details())  # type: ignore[arg-type]
    return watch, inner, instance


def _local(seq: int, step: str) -> WorkflowCommand:
    c = WorkflowCommand()
    c.schedule_local_activity.seq = seq
    c.schedule_local_activity.activity_id = step
    return c


def _remote(seq: int, activity_id: str) -> WorkflowCommand:
    c = WorkflowCommand()
    c.schedule_activity.seq = seq
    c.schedule_activity.activity_id = activity_id
    return c


def _resolved(seq: int) -> WorkflowActivation:
    job = WorkflowActivationJob()
    job.resolve_activity.seq = seq
    return WorkflowActivation(run_id="r", jobs=[job])


def _query() -> WorkflowActivation:
    job = WorkflowActivationJob()
    job.query_workflow.query_id = "q"
    return WorkflowActivation(run_id="r", jobs=[job])


def _start() -> WorkflowActivation:
    job = WorkflowActivationJob()
    job.initialize_workflow.workflow_id = "bpf/city-minato/case-1"
    return WorkflowActivation(run_id="r", jobs=[job])


WID = "bpf/city-minato/case-1"


def test_a_flow_waits_on_the_activities_it_asked_for_until_it_is_given_their_end() -> None:
    watch, inner, instance = _flow()
    inner.next = [_local(1, "tax"), _remote(2, "hub-call")]
    instance.activate(_start())
    state = watch.state(WID)
    assert state.local == {1: "tax"} and state.remote == {2: "hub-call"}
    assert state.activations == 1
    instance.activate(_resolved(1))
    state = watch.state(WID)
    assert state.local == {} and state.remote == {2: "hub-call"} and state.activations == 2


def test_an_activation_is_seen_running_while_it_runs_and_not_after() -> None:
    watch, inner, instance = _flow()
    assert not watch.running
    instance.activate(_start())
    assert inner.seen_running == [True]
    assert not watch.running


def test_a_query_is_not_an_activation_of_the_flow() -> None:
    watch, _, instance = _flow()
    instance.activate(_start())
    instance.activate(_query())
    assert watch.state(WID).activations == 1


def test_a_flow_that_ended_waits_on_nothing() -> None:
    watch, inner, instance = _flow()
    inner.next = [_local(1, "tax")]
    instance.activate(_start())
    end = WorkflowCommand()
    end.complete_workflow_execution.SetInParent()
    inner.next = [end]
    instance.activate(_query())
    assert watch.state(WID).local == {}


def test_a_new_instance_of_the_flow_starts_from_nothing_asked() -> None:
    watch, inner, instance = _flow()
    inner.next = [_local(1, "tax")]
    instance.activate(_start())
    again = watch.runner(_Runner(inner)).create_instance(_Details())  # type: ignore[arg-type]
    again.activate(_start())  # evicted, replayed from the start: asked again when replayed
    assert watch.state(WID).local == {}
