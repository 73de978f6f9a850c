"""The flows bench's steady-state rate (bench.flows._steady), on flows that are only a wait: it
reads each lane's rate from the flows it ends within its window after the ramp, leaves no flow
running, and a flow's error ends the measure with it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bench.flows import _measure, _steady

FLOW = 0.05  # seconds a flow of these takes, at least


def _flows(
    started: list[int], running: list[int], fail_at: int | None = None
) -> Callable[[int], Awaitable[Callable[[], Awaitable[object]]]]:
    async def start(i: int) -> Callable[[], Awaitable[object]]:
        started.append(i)
        running.append(i)

        async def result() -> object:
            try:
                await asyncio.sleep(FLOW)
                if i == fail_at:
                    raise RuntimeError("a flow failed")
                return i
            finally:
                running.remove(i)

        return result

    return start


async def test_the_rate_is_counted_in_the_steady_state_and_every_flow_is_drained() -> None:
    started: list[int] = []
    running: list[int] = []
    lanes = 4
    rate, ended = await _steady(_flows(started, running), lanes, window=0.5)
    # a lane ends at most one flow every FLOW seconds: the rate cannot be above lanes / FLOW
    # (however slow the machine, a wait is never shorter than asked), and is not nothing
    assert 0 < rate <= lanes / FLOW * 1.05
    assert running == []  # the drain: no flow is left behind
    assert ended == len(started)  # every flow started has ended and is counted in all
    assert sorted(started) == list(range(len(started)))  # each flow got a fresh index
    assert ended >= lanes  # the ramp: every lane ended a flow before the window


async def test_a_flow_that_fails_ends_the_measure_with_its_error() -> None:
    running: list[int] = []
    with pytest.raises(RuntimeError, match="a flow failed"):
        await _steady(_flows([], running, fail_at=1), 3, window=5.0)
    assert running == []  # the other lanes' flows are not left running


async def test_without_a_window_the_flows_are_one_burst() -> None:
    started: list[int] = []
    m = await _measure(_flows(started, []), 5, serial=2)
    assert m.ended == 5 and len(m.latencies_ms) == 2
    assert started == [0, 1, 2, 3, 4, 5, 6]
    assert all(ms >= FLOW * 1000 for ms in m.latencies_ms)
