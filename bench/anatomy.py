"""Where the Temporal server's CPU per flow goes: the history renkei's 1-query flow writes,
rebuilt one feature at a time on a plain workflow.

A renkei 1-query flow has the events of a plain 1-activity workflow plus: search attributes and
a memo at its start (the start's fingerprint), a patch marker (with the SDK's own upsert of ``TemporalChangeVersion``),
the hub's ``resolve`` answer (a larger activity result), the linkage as a local activity (a
marker) and two upserts (running, then its end). Each variant below is the plain workflow with
one of them, then with all of them; renkei's own 1-query flow runs in the same rounds. Every
side's Temporal server CPU and flows/s are the median of alternating rounds on the same dev
server: what the history's shape costs the server, apart from what renkei's workers do.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from renkei.kernel import search_attributes as sa

# A plain activity's answer as large as the hub's ``resolve`` answer to a 1-query flow (its
# encrypted payload in the history: the pinned definition, the first permit, the sealed code).
RESOLVED_BYTES = 2_800
START = 1  # the start's search attributes, as renkei's client sets them
PATCH = 2  # a patch marker (the SDK adds its TemporalChangeVersion upsert)
LOCAL = 4  # a local activity after the activity (the direct channel's linkage)
UPSERTS = 8  # two upserts: running, then the end
LARGE = 16  # the activity's answer the size of the hub's resolve answer
MEMO = 32  # the start's memo, as renkei's client sets it (the start's fingerprint)
VARIANTS: dict[str, int] = {
    "plain: 1 activity": 0,
    "+ the start's search attributes": START,
    "+ the start's memo": MEMO,
    "+ a patch marker": PATCH,
    "+ a local activity": LOCAL,
    "+ two upserts": UPSERTS,
    "+ a 2.8 KB answer": LARGE,
    "all of these (renkei's history, without renkei)": START
    | MEMO
    | PATCH
    | LOCAL
    | UPSERTS
    | LARGE,
}


@activity.defn(name="anatomy-answer")
async def answer(size: int) -> str:
    return "x" * size


@activity.defn(name="anatomy-local")
async def local(x: str) -> str:
    return x


@workflow.defn(name="anatomy")
class Anatomy:
    """The plain 1-activity workflow, with the parts of renkei's history ``features`` names."""

    @workflow.run
    async def run(self, features: int) -> str:
        if features & PATCH:
            workflow.patched("anatomy-v1")
        await workflow.execute_activity(
            answer,
            RESOLVED_BYTES if features & LARGE else 1,
            start_to_close_timeout=timedelta(seconds=30),
        )
        if features & UPSERTS:
            workflow.upsert_search_attributes([sa.STATUS.value_set("running")])
        if features & LOCAL:
            await workflow.execute_local_activity(
                local, "x", start_to_close_timeout=timedelta(seconds=30)
            )
        if features & UPSERTS:
            workflow.upsert_search_attributes([sa.STATUS.value_set("completed")])
        return "done"


def start_attributes() -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.BPF, "anatomy"),
            SearchAttributePair(sa.EXECUTOR, "pref-tokyo"),
            SearchAttributePair(sa.TRIGGER, "counter"),
            SearchAttributePair(sa.STATUS, "starting"),
        ]
    )


async def _round(
    cpu: Callable[[], float],
    start: Callable[[], Awaitable[Callable[[], Awaitable[object]]]],
    n: int,
) -> tuple[float, float]:
    """(server CPU ms per flow, flows/s) for ``n`` flows started at once."""
    c0, t0 = cpu(), time.perf_counter()
    waits = await asyncio.gather(*(start() for _ in range(n)))
    await asyncio.gather(*(w() for w in waits))
    return (cpu() - c0) / n * 1000, n / (time.perf_counter() - t0)


async def run(
    client: Client,
    server_cpu: Callable[[], float],
    renkei_start: Callable[[], Awaitable[Callable[[], Awaitable[object]]]],
    flows: int,
    rounds: int,
) -> dict[str, tuple[float, float]]:
    """Median (server CPU ms per flow, flows/s) of each variant and of renkei's 1-query flow."""
    tq = f"anatomy-{uuid.uuid4().hex[:8]}"
    measured: dict[str, list[tuple[float, float]]] = {}
    async with Worker(client, task_queue=tq, workflows=[Anatomy], activities=[answer, local]):

        def plain(features: int) -> Callable[[], Awaitable[Callable[[], Awaitable[object]]]]:
            async def start() -> Callable[[], Awaitable[object]]:
                h = await client.start_workflow(
                    Anatomy.run,
                    features,
                    id=f"anatomy-{uuid.uuid4()}",
                    task_queue=tq,
                    search_attributes=start_attributes() if features & START else None,
                    memo={"fingerprint": "0" * 64} if features & MEMO else None,
                )
                return h.result

            return start

        for features in VARIANTS.values():  # warm each path up
            await _round(server_cpu, plain(features), 5)
        await _round(server_cpu, renkei_start, 5)
        for _ in range(rounds):
            for name, features in VARIANTS.items():
                measured.setdefault(name, []).append(
                    await _round(server_cpu, plain(features), flows)
                )
            measured.setdefault("renkei, 1 query", []).append(
                await _round(server_cpu, renkei_start, flows)
            )
    return {
        name: (statistics.median(m[0] for m in ms), statistics.median(m[1] for m in ms))
        for name, ms in measured.items()
    }


def report(results: dict[str, tuple[float, float]], flows: int, rounds: int) -> list[str]:
    base_cpu, base_rate = results["plain: 1 activity"]
    out = [
        f"| {flows} flows at once, median of {rounds} rounds | Temporal server CPU per flow"
        " | more than plain | flows/s | of plain's |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (cpu, rate) in results.items():
        out.append(
            f"| {name} | {cpu:.1f} ms | {cpu - base_cpu:+.1f} ms | {rate:.1f}"
            f" | {rate / base_rate:.2f} |"
        )
    return out
