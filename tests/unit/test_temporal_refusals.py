"""A Temporal error a route does not answer itself becomes the API's status, not a 500."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from renkei.app.web import temporal_refused

REQUEST = Request({"type": "http", "method": "GET", "path": "/api/flows/x/state", "headers": []})


async def _answer(err: Exception) -> tuple[int, str]:
    response = await temporal_refused(REQUEST, err)
    return response.status_code, json.loads(bytes(response.body))["detail"]


async def test_no_such_run_is_a_404_naming_no_workflow() -> None:
    wid = "child-allowance-check/city-minato/2026-000042"
    status, detail = await _answer(
        RPCError(f"workflow not found for ID: {wid}", RPCStatusCode.NOT_FOUND, b"")
    )
    assert status == 404 and wid not in detail


@pytest.mark.parametrize(
    "code", [RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED]
)
async def test_temporal_out_of_reach_is_a_503(code: RPCStatusCode) -> None:
    status, detail = await _answer(RPCError("transport error", code, b""))
    assert status == 503 and "again" in detail


async def test_an_answer_the_flow_did_not_take_in_time_is_a_503() -> None:
    status, _ = await _answer(WorkflowUpdateRPCTimeoutOrCancelledError())
    assert status == 503


async def test_any_other_temporal_error_stays_a_server_error() -> None:
    err = RPCError("boom", RPCStatusCode.INTERNAL, b"")
    with pytest.raises(RPCError):
        await temporal_refused(REQUEST, err)
