"""The hub's reading of the run a request to its endpoint names (activities.claims.described_run):
what an activity's info says of the run that scheduled it, Temporal's description must say of the
run named. Temporal's answers are played by a stand-in for the client (Temporal lies outside the
project); each case is one a hostile executor could name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.claims import described_run
from renkei.contracts.names import control_queue, workflow_id

PREFIX = "renkei"
WID = workflow_id("wait-first-probe", "city-minato", "case-1")
RUN = "01a22600-0000-7000-8000-000000000001"


@dataclass
class _Described:
    status: WorkflowExecutionStatus = WorkflowExecutionStatus.RUNNING
    task_queue: str = control_queue(PREFIX, "city-minato")
    parent_id: str | None = None
    workflow_type: str = "wait-first-probe"


@dataclass
class _Temporal:
    """Answers ``describe`` of any run with ``described``, or raises ``error``."""

    described: _Described = field(default_factory=_Described)
    error: RPCError | None = None
    asked: list[tuple[str, str | None]] = field(default_factory=list)

    def get_workflow_handle(self, wid: str, *, run_id: str | None = None) -> Any:
        temporal = self

        class _Handle:
            async def describe(self) -> _Described:
                temporal.asked.append((wid, run_id))
                if temporal.error is not None:
                    raise temporal.error
                return temporal.described

        return _Handle()


async def test_a_running_top_level_run_on_its_executors_queue_is_taken_as_temporal_names_it() -> (
    None
):
    temporal = _Temporal(_Described(workflow_type="what-temporal-says"))
    found = await described_run(temporal, PREFIX, WID, RUN)  # type: ignore[arg-type]
    assert (found.workflow_id, found.run_id, found.workflow_type) == (
        WID,
        RUN,
        "what-temporal-says",
    )
    assert temporal.asked == [(WID, RUN)]  # the run named, not the newest of the id


@pytest.mark.parametrize(
    ("described", "reason"),
    [
        (_Described(status=WorkflowExecutionStatus.COMPLETED), "has ended"),
        (_Described(status=WorkflowExecutionStatus.CONTINUED_AS_NEW), "has ended"),
        (_Described(task_queue="renkei.control.city-minato.mine"), "own control queue"),
        (_Described(task_queue=control_queue(PREFIX, "city-shibuya")), "own control queue"),
        (_Described(task_queue=f"{PREFIX}.hub"), "own control queue"),
        (_Described(parent_id="some-flow/city-minato/case-9"), "another flow calls"),
    ],
)
async def test_a_run_not_as_an_endpoint_resolves_it_is_refused_for_good(
    described: _Described, reason: str
) -> None:
    with pytest.raises(ApplicationError) as refused:
        await described_run(_Temporal(described), PREFIX, WID, RUN)  # type: ignore[arg-type]
    assert refused.value.type == "MalformedStart" and refused.value.non_retryable
    assert reason in refused.value.message


@pytest.mark.parametrize(("wid", "run"), [("not-a-flow", RUN), (WID, "")])
async def test_an_id_that_names_no_flow_is_refused_before_temporal_is_asked(
    wid: str, run: str
) -> None:
    temporal = _Temporal()
    with pytest.raises(ApplicationError) as refused:
        await described_run(temporal, PREFIX, wid, run)  # type: ignore[arg-type]
    assert refused.value.non_retryable and temporal.asked == []


async def test_temporal_not_knowing_the_run_is_asked_again_an_id_it_cannot_read_is_final() -> None:
    missing = _Temporal(error=RPCError("not found", RPCStatusCode.NOT_FOUND, b""))
    with pytest.raises(ApplicationError) as again:
        await described_run(missing, PREFIX, WID, RUN)  # type: ignore[arg-type]
    assert not again.value.non_retryable
    bad = _Temporal(error=RPCError("bad run id", RPCStatusCode.INVALID_ARGUMENT, b""))
    with pytest.raises(ApplicationError) as final:
        await described_run(bad, PREFIX, WID, RUN)  # type: ignore[arg-type]
    assert final.value.non_retryable
    down = _Temporal(error=RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b""))
    with pytest.raises(RPCError):  # Temporal out of reach: the endpoint's fault, asked again
        await described_run(down, PREFIX, WID, RUN)  # type: ignore[arg-type]
