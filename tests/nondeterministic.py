"""Small workflows for the determinism check (``tests/test_unsandboxed.py``): two that call what
a workflow must not (the machine's clock, random numbers), and one that asks the workflow's own
clock instead. Kept in a module of their own, with nothing else imported: the sandbox imports
the module afresh for each run it checks."""

from __future__ import annotations

import datetime as dt
import random

from temporalio import workflow


@workflow.defn(name="determinism.machine-clock")
class MachineClock:
    @workflow.run
    async def run(self) -> str:
        return dt.datetime.now().isoformat()  # the machine's clock: another value on replay


@workflow.defn(name="determinism.random-number")
class RandomNumber:
    @workflow.run
    async def run(self) -> float:
        return random.random()  # another draw on replay


@workflow.defn(name="determinism.workflow-clock")
class WorkflowClock:
    @workflow.run
    async def run(self) -> str:
        return workflow.now().isoformat()  # the history's clock: the same on replay
