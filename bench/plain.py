"""The plain Temporal baselines: no-op activities in sequence, and a workflow waiting for a signal."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop(x: str) -> str:
    return x


@workflow.defn(name="plain-seq")
class PlainSeq:
    """``n`` no-op activities one after the other: what a BPF of ``n`` queries does, minus renkei."""

    @workflow.run
    async def run(self, n: int) -> str:
        x = "x"
        for _ in range(n):
            x = await workflow.execute_activity(
                noop, x, start_to_close_timeout=timedelta(seconds=30)
            )
        return x


@workflow.defn(name="plain-par")
class PlainPar:
    """``n`` no-op activities at once: what a BPF of ``n`` queries in parallel does, minus renkei."""

    @workflow.run
    async def run(self, n: int) -> str:
        done = await asyncio.gather(
            *(
                workflow.execute_activity(noop, "x", start_to_close_timeout=timedelta(seconds=30))
                for _ in range(n)
            )
        )
        return "".join(done)


@workflow.defn(name="plain-wait")
class PlainWait:
    """The baseline of a waiting flow: a workflow that waits for one signal."""

    def __init__(self) -> None:
        self.answer: bool | None = None

    @workflow.signal(name="answer")
    def answer_signal(self, value: bool) -> None:
        self.answer = value

    @workflow.run
    async def run(self) -> bool:
        await workflow.wait_condition(lambda: self.answer is not None, timeout=timedelta(days=30))
        return bool(self.answer)
