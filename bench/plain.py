"""The plain Temporal baseline: a workflow running three no-op activities in sequence."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop(x: str) -> str:
    return x


@workflow.defn(name="plain-three")
class PlainThree:
    @workflow.run
    async def run(self, x: str) -> str:
        for _ in range(3):
            x = await workflow.execute_activity(
                noop, x, start_to_close_timeout=timedelta(seconds=30)
            )
        return x
