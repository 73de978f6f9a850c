"""BPF throughput and latency against plain Temporal, and where the CPU goes.

The BPFs are ``n`` local-tax queries in sequence (Tokyo asks Minato, 別表第二 五十七), and 3
in one parallel step; the baselines are workflows running ``n`` no-op activities in sequence, or
3 at once. Both run on the same dev
server, in the same process, in the same run. renkei's flows carry everything they carry in
production: encrypted payloads, the hub's brokering, the whitelist interceptor and three
hash-chained access records per linkage.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import psutil
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agencies.synthetic import generate
from bench.plain import PlainPar, PlainSeq, noop
from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.bpf.loader import parse_text
from renkei.contracts.messages import StartFlow
from renkei.kernel import keys
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.settings import Settings

SIZES = (1, 3, 10)


def _case_ref() -> str:
    """A fresh case reference of letters only: twelve hex digits that happened to be all digits
    could read as an individual number, which every start refuses in a case reference."""
    return "bench-" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))


def sequential_bpf(n: int) -> str:
    steps = "\n".join(
        f"  - id: q{i}\n    query: {{info: local-tax, provider: city-minato}}"
        for i in range(1, n + 1)
    )
    return f"""bpf: bench-seq-{n}
version: 1
title: {{ja: 連続照会 {n}, en: {n} queries in sequence}}
task: child-rearing-allowance
owners:
  definer: mhlw
  executors: [role:prefectural-governor-etc]
triggers: [counter]
steps:
{steps}
result:
  income: q{n}.taxable_income
"""


def parallel_bpf(n: int) -> str:
    """``n`` local-tax queries in one parallel step (a lane each)."""
    lanes = "\n".join(
        f"      - [{{id: q{i}, query: {{info: local-tax, provider: city-minato}}}}]"
        for i in range(1, n + 1)
    )
    return f"""bpf: bench-par-{n}
version: 1
title: {{ja: 並行照会 {n}, en: {n} queries in parallel}}
task: child-rearing-allowance
owners:
  definer: mhlw
  executors: [role:prefectural-governor-etc]
triggers: [counter]
steps:
  - id: all
    parallel:
{lanes}
result:
  income: q1.taxable_income
"""


async def register_sequential(pool: asyncpg.Pool) -> None:
    for n in SIZES:
        await registry.register(pool, parse_text(sequential_bpf(n), f"bench-seq-{n}.yaml"))
    await registry.register(pool, parse_text(parallel_bpf(3), "bench-par-3.yaml"))


@dataclass
class Measured:
    flows_per_s: float
    latencies_ms: list[float]
    ended: int = 0  # flows ended in the throughput run, all of them (ramp and drain too)

    def pct(self, q: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[q - 1]


Start = Callable[[int], Awaitable[Callable[[], Awaitable[object]]]]


async def _measure(start: Start, flows: int, serial: int, window: float = 0.0) -> Measured:
    """Throughput of ``flows`` started at once (with ``window`` seconds: ``flows`` kept running
    at once, in the steady state, :func:`_steady`); then the latency of ``serial`` flows, one by
    one."""
    if window > 0:
        rate, ended = await _steady(start, flows, window)
    else:
        t0 = time.perf_counter()
        waits = await asyncio.gather(*(start(i) for i in range(flows)))
        await asyncio.gather(*(w() for w in waits))
        rate, ended = flows / (time.perf_counter() - t0), flows
    latencies = []
    for i in range(serial):
        t = time.perf_counter()
        await (await start(ended + i))()
        latencies.append((time.perf_counter() - t) * 1000)
    return Measured(rate, latencies, ended)


async def _steady(start: Start, lanes: int, window: float) -> tuple[float, int]:
    """(flows/s in the steady state, flows ended in all). ``lanes`` flows run at once, each lane
    starting its next flow as its last ends. Once every lane has ended a flow (the ramp), each
    lane's rate is read from the flows it ends within the window: at least ``window`` seconds,
    and at least twice the ramp (some flows take longer than a short window). Then each lane
    ends the flow it runs (the drain: none is left behind).

    Flows started at once and counted to the last one measure a burst, its ramp and its tail
    as much as the rate: in rounds of about a second, the same commit read 0.67 and 0.81 of
    plain Temporal's rate at 10 queries. Nor are the flows ended within a window counted: lanes
    started together stay in step, their flows end in waves, and a window of a few flows' time
    holds one wave more or less. A lane's rate, from the first to the last flow it ends within
    the window, is one cycle of its own per flow, whatever the phase, and the lanes' rates add
    up to the throughput (a closed system of ``lanes`` flows)."""
    ends: list[list[float]] = [[] for _ in range(lanes)]
    every_lane = asyncio.Event()
    stop = asyncio.Event()
    count = itertools.count()

    async def lane(i: int) -> None:
        while not stop.is_set():
            await (await start(next(count)))()
            ends[i].append(time.perf_counter())
            if len(ends[i]) == 1 and all(ends):
                every_lane.set()

    t0 = time.perf_counter()
    running = [asyncio.create_task(lane(i)) for i in range(lanes)]
    ramped = asyncio.create_task(every_lane.wait())
    try:
        # a lane that fails ends the measure with its error, ramped or not
        await asyncio.wait([ramped, *running], return_when=asyncio.FIRST_COMPLETED)
        for t in running:
            if t.done():
                t.result()
        began = time.perf_counter()
        await asyncio.sleep(max(window, 2 * (began - t0)))
        ended = time.perf_counter()
        stop.set()
        await asyncio.gather(*running)
    finally:  # a failed measure leaves no lane running either
        ramped.cancel()
        for t in running:
            t.cancel()
        await asyncio.gather(ramped, *running, return_exceptions=True)
    rates = []
    for own in ends:
        within = [t for t in own if began <= t < ended]
        if len(within) >= 2:
            rates.append((len(within) - 1) / (within[-1] - within[0]))
    if not rates:
        raise RuntimeError("no lane ended two flows within the window: make it longer")
    # a lane that ended fewer than two (a flow longer than half the window) counts as the others
    return statistics.fmean(rates) * lanes, sum(len(own) for own in ends)


async def plain(
    client: Client,
    n: int,
    flows: int,
    serial: int,
    *,
    parallel: bool = False,
    window: float = 0.0,
) -> Measured:
    tq = f"plain-{uuid.uuid4().hex[:8]}"
    flow = PlainPar if parallel else PlainSeq
    async with Worker(client, task_queue=tq, workflows=[flow], activities=[noop]):

        async def start(_: int) -> Callable[[], Awaitable[object]]:
            h = await client.start_workflow(flow.run, n, id=f"plain-{uuid.uuid4()}", task_queue=tq)
            return h.result

        return await _measure(start, flows, serial, window)


@functools.cache
def _residents(hub_key: str, sample_residents: int) -> list[str]:
    """The subjects the bench's flows are about (their codes at the executor), made once per
    process: not charged to renkei's rounds again and again, as plain's have no such work."""
    return [
        derive_code(hub_key, "pref-tokyo", h.members[0].subject_id)
        for h in generate(sample_residents)
        if h.municipality == "city-minato"
    ]


async def renkei(
    sdk: RenkeiClient,
    settings: Settings,
    n: int,
    flows: int,
    serial: int,
    *,
    parallel: bool = False,
    window: float = 0.0,
) -> Measured:
    """Flows of ``bench-seq-N`` (``bench-par-N``: in parallel; the workers must be running);
    ``window``: throughput in the steady state (:func:`_measure`)."""
    start = one_start(sdk, settings, n, parallel=parallel)

    async def started(_: int) -> Callable[[], Awaitable[object]]:
        return await start()

    return await _measure(started, flows, serial, window)


def one_start(
    sdk: RenkeiClient, settings: Settings, n: int, *, parallel: bool = False
) -> Callable[[], Awaitable[Callable[[], Awaitable[object]]]]:
    """What starts one flow of ``bench-seq-N`` (``bench-par-N``), each about the next of the
    sample residents, and returns what waits for its result."""
    residents = _residents(keys.load(settings).hub_key, settings.sample_residents)
    count = itertools.count()

    async def start() -> Callable[[], Awaitable[object]]:
        h = await sdk.start(
            StartFlow(
                bpf=f"bench-{'par' if parallel else 'seq'}-{n}",
                executor="pref-tokyo",
                subject=residents[next(count) % len(residents)],
                case_ref=_case_ref(),
            )
        )
        return h.result

    return start


class CpuMeter:
    """CPU seconds spent by the Temporal server, PostgreSQL and this process (workers, client)."""

    def __init__(self, postmaster_pid: int | None) -> None:
        me = psutil.Process()
        self.groups: dict[str, Callable[[], list[psutil.Process]]] = {
            "Temporal server": lambda: [
                p for p in me.children(recursive=True) if "temporal" in p.name()
            ],
            "PostgreSQL": lambda: (
                [psutil.Process(postmaster_pid), *psutil.Process(postmaster_pid).children()]
                if postmaster_pid
                else []
            ),
            "workers and clients (this process)": lambda: [me],
        }

    def snapshot(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, procs in self.groups.items():
            out[name] = {}
            for p in procs():
                try:
                    t = p.cpu_times()
                    out[name][p.pid] = t.user + t.system
                except psutil.Error:
                    continue
        return out

    @staticmethod
    def spent(
        before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
    ) -> dict[str, float]:
        return {
            name: sum(cpu - before[name].get(pid, 0.0) for pid, cpu in after[name].items())
            for name in after
        }
