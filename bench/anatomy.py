"""Where the Temporal server's CPU per flow goes: the history renkei's flows write, rebuilt one
feature at a time on a plain workflow.

A renkei 1-query flow has the events of a plain 1-activity workflow plus: search attributes and
a memo at its start (the start's fingerprint), the hub's ``resolve`` answer (a larger activity
result), the linkage as a local activity (a marker) and an upsert as it ends (runs from before
this release also record a patch marker, with the SDK's own upsert of
``TemporalChangeVersion``). Each variant below is the plain workflow with one of them, then with
all of them, then with all of them and the hub's ``resolve`` asked as a local activity instead
of an activity (what a hub answering over a direct channel, as the providers do, would leave in
the history); renkei's own 1-query flow runs in the same rounds.

A renkei flow waiting for a person (:class:`AnatomyWait`) has the events of a plain workflow
waiting for a signal with the same 30-day timeout plus: the start's search attributes and memo,
the hub's ``resolve`` before it waits, and an upsert as it waits and as it ends. The same
variants are measured for it, start (until the server is idle, every flow waiting) and resume
apart.

Every side's Temporal server CPU and flows/s are the median of alternating rounds on the same dev
server: what the history's shape costs the server, apart from what renkei's workers do.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
PATCH = 2  # a patch marker (the SDK adds its TemporalChangeVersion upsert): runs from before
LOCAL = 4  # a local activity after the activity (the direct channel's linkage)
UPSERT = 8  # an upsert as it ends (a waiting flow: also one as it waits)
LARGE = 16  # the activity's answer the size of the hub's resolve answer
MEMO = 32  # the start's memo, as renkei's client sets it (the start's fingerprint)
HUB_LOCAL = 64  # the activity asked as a local activity (the hub over a direct channel)
RESOLVE = 128  # a waiting flow: the activity (the hub's resolve) before it waits
# renkei's 1-query history as this release writes it (no patch marker), without renkei's work
RENKEI_1Q = START | MEMO | LOCAL | UPSERT | LARGE
ALL_OF_THESE = "all of these but the patch marker (renkei's history, without renkei)"
HUB_OVER_DIRECT = "the same, the hub's resolve a local activity (a direct channel to the hub)"
VARIANTS: dict[str, int] = {
    "plain: 1 activity": 0,
    "+ the start's search attributes": START,
    "+ the start's memo": MEMO,
    "+ a patch marker (runs from before)": PATCH,
    "+ a local activity": LOCAL,
    "+ an upsert": UPSERT,
    "+ a 2.8 KB answer": LARGE,
    ALL_OF_THESE: RENKEI_1Q,
    HUB_OVER_DIRECT: RENKEI_1Q | HUB_LOCAL,
}
# renkei's waiting history (bench/definitions/wait-only.yaml), without renkei's work
RENKEI_WAIT = START | MEMO | RESOLVE | LARGE | UPSERT
PLAIN_WAIT = "plain: waits for a signal (30-day timeout)"
WAIT_VARIANTS: dict[str, int] = {
    PLAIN_WAIT: 0,
    "+ the start's search attributes and memo": START | MEMO,
    "+ an activity before it waits": RESOLVE,
    "+ an upsert as it waits and as it ends": UPSERT,
    "all of these, the activity's answer 2.8 KB (renkei's history, without renkei)": RENKEI_WAIT,
    HUB_OVER_DIRECT: RENKEI_WAIT | HUB_LOCAL,
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
        await _resolve(features)
        if features & LOCAL:
            await workflow.execute_local_activity(
                local, "x", start_to_close_timeout=timedelta(seconds=30)
            )
        if features & UPSERT:
            workflow.upsert_search_attributes([sa.STATUS.value_set("completed")])
        return "done"


async def _resolve(features: int) -> None:
    """The activity standing for the hub's ``resolve``: an activity, or a local one."""
    size = RESOLVED_BYTES if features & LARGE else 1
    if features & HUB_LOCAL:
        await workflow.execute_local_activity(
            answer, size, start_to_close_timeout=timedelta(seconds=30)
        )
    else:
        await workflow.execute_activity(answer, size, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="anatomy-wait")
class AnatomyWait:
    """A plain workflow waiting for one signal (30 days at most), with the parts of renkei's
    waiting history ``features`` names. Says whether it waited (the signal came after its wait
    began): a round whose flows did not wait measured nothing."""

    def __init__(self) -> None:
        self.answered = False

    @workflow.signal(name="answer")
    def answer_signal(self) -> None:
        self.answered = True

    @workflow.run
    async def run(self, features: int) -> bool:
        if features & (RESOLVE | HUB_LOCAL):
            await _resolve(features)
        if features & UPSERT:
            workflow.upsert_search_attributes([sa.STATUS.value_set("waiting")])
        waited = not self.answered
        await workflow.wait_condition(lambda: self.answered, timeout=timedelta(days=30))
        if features & UPSERT:
            workflow.upsert_search_attributes([sa.STATUS.value_set("completed")])
        return waited


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


# A waiting flow started: what resumes it, and what waits for its result.
Started = tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]
# The server counts as idle (every flow started is waiting) after this many quiet polls in a row.
QUIET_POLLS = 2
POLL_S = 0.25
QUIET_CPU_S = 0.02  # at most 8 % of a core over a poll: the idle dev server's own ticking


@dataclass(frozen=True)
class WaitSide:
    """One waiting side of the anatomy: how to start a flow, and how to tell that every flow of a
    round waited (``waiting(n)`` before they are resumed, ``waited(results)`` after)."""

    start: Callable[[], Awaitable[Started]]
    waiting: Callable[[int], Awaitable[bool]] | None = None
    waited: Callable[[list[object]], bool] | None = None


async def _until_idle(cpu: Callable[[], float]) -> float:
    """The server's CPU when it went idle: ``QUIET_POLLS`` polls in a row with almost none."""
    quiet, last = 0, cpu()
    while quiet < QUIET_POLLS:
        await asyncio.sleep(POLL_S)
        now = cpu()
        quiet = quiet + 1 if now - last < QUIET_CPU_S else 0
        last = now
    return last


async def _wait_round(cpu: Callable[[], float], side: WaitSide, n: int) -> tuple[float, float]:
    """(server CPU ms per flow to start, to resume) for ``n`` flows started at once, resumed
    once every one waits. Raises if any did not wait: the round measured another history than
    its own. (No rate: the idle server is seen a poll late; ``bench waiting`` times them.)"""
    c0 = cpu()
    started = await asyncio.gather(*(side.start() for _ in range(n)))
    c1 = await _until_idle(cpu)
    if side.waiting is not None and not await side.waiting(n):
        raise RuntimeError("the server went idle before every flow of the round waited")
    c2 = cpu()
    # a flow that never waited may have ended already: its resume fails, its result tells
    failed = [
        e
        for e in await asyncio.gather(*(resume() for resume, _ in started), return_exceptions=True)
        if isinstance(e, BaseException)
    ]
    results = await asyncio.gather(*(done() for _, done in started))
    if side.waited is not None and not side.waited(results):
        raise RuntimeError("a flow of the round was resumed before it waited")
    if failed:
        raise failed[0]
    return (c1 - c0) / n * 1000, (cpu() - c2) / n * 1000


async def run_waiting(
    client: Client,
    server_cpu: Callable[[], float],
    renkei: WaitSide,
    flows: int,
    rounds: int,
) -> dict[str, tuple[float, float]]:
    """Median (server CPU ms per flow to start, to resume) of each waiting variant and of
    renkei's own waiting flow."""
    tq = f"anatomy-wait-{uuid.uuid4().hex[:8]}"
    measured: dict[str, list[tuple[float, float]]] = {}
    async with Worker(client, task_queue=tq, workflows=[AnatomyWait], activities=[answer]):

        def plain(features: int) -> WaitSide:
            async def start() -> Started:
                h = await client.start_workflow(
                    AnatomyWait.run,
                    features,
                    id=f"anatomy-wait-{uuid.uuid4()}",
                    task_queue=tq,
                    search_attributes=start_attributes() if features & START else None,
                    memo={"fingerprint": "0" * 64} if features & MEMO else None,
                )
                return (lambda: h.signal(AnatomyWait.answer_signal)), h.result

            return WaitSide(start, waited=lambda results: all(r is True for r in results))

        for features in WAIT_VARIANTS.values():  # warm each path up
            await _wait_round(server_cpu, plain(features), 5)
        await _wait_round(server_cpu, renkei, 5)
        for _ in range(rounds):
            for name, features in WAIT_VARIANTS.items():
                measured.setdefault(name, []).append(
                    await _wait_round(server_cpu, plain(features), flows)
                )
            measured.setdefault("renkei, waiting", []).append(
                await _wait_round(server_cpu, renkei, flows)
            )
    return {
        name: (statistics.median(m[0] for m in ms), statistics.median(m[1] for m in ms))
        for name, ms in measured.items()
    }


def report_waiting(results: dict[str, tuple[float, float]], flows: int, rounds: int) -> list[str]:
    base_start, base_resume = results[PLAIN_WAIT]
    out = [
        f"| {flows} flows waiting at once, median of {rounds} rounds | Temporal server CPU per"
        " flow to start | of plain's | to resume | of plain's |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (start, resume) in results.items():
        out.append(
            f"| {name} | {start:.1f} ms | {start / base_start:.2f} | {resume:.1f} ms"
            f" | {resume / base_resume:.2f} |"
        )
    return out


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
