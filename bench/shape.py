"""The production shape: the same 3-query flow with the parties' workers in one process and in
processes of their own (issue #16).

``bench-seq-3`` (Tokyo asks Minato three times; ``--queries 1`` or ``10`` for ``bench-seq-1`` or
``bench-seq-10``), a fixed number of flows at once, in three
shapes on one stack, each on a task-queue prefix of its own:

- (a) every worker in the bench's own process, as ``python -m bench flows`` runs them;
- (b) the hub's worker, Tokyo's control worker and Minato's agency worker each a
  ``renkei worker`` process of its own, as deployed;
- (c) as (b), with two ``renkei worker control pref-tokyo`` processes on the same control queue.

With ``--transport direct``, renkei's flows ask Minato over the direct channel in every shape:
in (b) and (c) the agency process listens on a port of its own and the control processes are
told where (``RENKEI_LINKAGE_LISTEN`` / ``RENKEI_LINKAGE_ENDPOINTS``), as deployed.

Plain Temporal runs in the same run, its worker in a process of its own, for the ratio. Rounds
alternate the shapes; throughput is the median of :data:`ROUNDS`. CPU is measured per process
group in the first round of each shape.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.process import BaseProcess

import asyncpg
import psutil
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench import flows as bf
from bench.plain import PlainSeq, noop
from renkei.app.client import RenkeiClient
from renkei.contracts.names import HUB
from renkei.kernel import keys
from renkei.kernel.settings import Settings
from tests.processes import (
    RenkeiProcess,
    all_ready,
    direct_endpoints,
    direct_env,
    free_port,
    worker,
)
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist
from workers.assembly import running_workers
from workers.plugin import connect

ROUNDS = 3
# Queries per flow (``--queries``): ``bench-seq-3`` unless told otherwise; the plain baseline asks
# as many activities.
QUERIES = [3]
EXECUTOR, PROVIDER = "pref-tokyo", "city-minato"
PLAIN = "plain Temporal (its worker in its own process)"
ONE = "(a) one process"
OWN = "(b) a process per worker"
TWO = "(c) as (b), two control processes"
SHAPES = (PLAIN, ONE, OWN, TWO)
# The process groups whose CPU is read; a shape's column shows the groups it runs.
SHARED = ("Temporal server", "PostgreSQL", "the bench's process")
ROLES = ("hub's worker", "Tokyo's control worker(s)", "Minato's agency worker", "plain worker")


def worker_plan(controls: int) -> list[tuple[str, ...]]:
    """The ``renkei worker`` arguments of a shape with ``controls`` control processes: the hub's
    worker, Tokyo's control worker(s) on the one control queue, Minato's agency worker."""
    if controls < 1:
        raise ValueError("a shape needs at least one control worker process")
    return [("hub",), *[("control", EXECUTOR)] * controls, ("agency", PROVIDER)]


def process_plan(controls: int, transport: str) -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """:func:`worker_plan`'s processes with the settings each is given beyond the stack's: the
    hub's endpoint on a free local port, which the control processes are told of (their runs
    are resolved there); over the direct channel (``transport`` ``direct``), the agency's
    endpoint too, and the transport."""
    plan = worker_plan(controls)
    if transport != "direct":
        hub = f"127.0.0.1:{free_port()}"
        told = {
            "hub": {"RENKEI_LINKAGE_LISTEN": hub},
            "control": {"RENKEI_LINKAGE_ENDPOINTS": json.dumps({HUB: hub})},
        }
        return [(a, told.get(a[0], {})) for a in plan]
    endpoints = direct_endpoints(PROVIDER)
    return [(a, direct_env(endpoints, *a)) for a in plan]


def role_of(args: tuple[str, ...]) -> str:
    """The process group (one of :data:`ROLES`) a ``renkei worker`` process belongs to."""
    return {"hub": ROLES[0], "control": ROLES[1], "agency": ROLES[2]}[args[0]]


def cpu_table(spent: Mapping[str, Mapping[str, float]], flows: int) -> list[str]:
    """A markdown table of CPU milliseconds per flow: a row per process group, a column per shape
    (in :data:`SHAPES` order); a group a shape does not run is shown as a dash."""
    shapes = [s for s in SHAPES if s in spent]
    lines = [
        "| CPU per flow | " + " | ".join(shapes) + " |",
        "| --- |" + " --- |" * len(shapes),
    ]
    for group in (*SHARED, *ROLES):
        if not any(group in spent[s] for s in shapes):
            continue
        cells = [
            f"{spent[s][group] / flows * 1000:.0f} ms" if group in spent[s] else "–" for s in shapes
        ]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    totals = [f"**{sum(spent[s].values()) / flows * 1000:.0f} ms**" for s in shapes]
    lines.append("| **all of them** | " + " | ".join(totals) + " |")
    return lines


def _serve_plain(address: str, task_queue: str) -> None:
    """The plain baseline's worker, in a process of its own, until terminated."""

    async def serve() -> None:
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        async with Worker(client, task_queue=task_queue, workflows=[PlainSeq], activities=[noop]):
            await asyncio.Event().wait()

    asyncio.run(serve())


async def _plain(client: Client, task_queue: str, flows: int, serial: int) -> bf.Measured:
    async def start(_: int) -> Callable[[], Awaitable[object]]:
        h = await client.start_workflow(
            PlainSeq.run, QUERIES[0], id=f"plain-{uuid.uuid4()}", task_queue=task_queue
        )
        return h.result

    return await bf._measure(start, flows, serial)


async def run(
    address: str, pool: asyncpg.Pool, settings: Settings, url: str, quick: bool
) -> tuple[dict[str, list[float]], dict[str, bf.Measured], dict[str, dict[str, float]], int, int]:
    """Rates per round, the last round's measures (with latency) and CPU spent per process group
    in each shape's first round; and the flows at once and one by one."""
    flows = 30 if quick else 200
    serial = 20 if quick else 100
    prefixes = {s: f"s{i}{uuid.uuid4().hex[:6]}" for i, s in enumerate(SHAPES)}
    per_shape = {
        s: settings.model_copy(update={"task_queue_prefix": p}) for s, p in prefixes.items()
    }
    backend = await pool.fetchval("SELECT pg_backend_pid()")
    meter = bf.CpuMeter(psutil.Process(backend).ppid())
    shared = dict(zip(SHARED, meter.groups.values(), strict=True))
    groups: dict[str, dict[str, Callable[[], list[psutil.Process]]]] = {
        s: dict(shared) for s in SHAPES
    }
    procs: dict[str, list[tuple[tuple[str, ...], RenkeiProcess]]] = {
        shape: [
            (a, worker(per_shape[shape], address, *a, ready=False, **env))
            for a, env in process_plan(controls, settings.linkage_transport)
        ]
        for shape, controls in ((OWN, 1), (TWO, 2))
    }
    plain_tq = f"{prefixes[PLAIN]}-plain"
    plain_proc: BaseProcess = multiprocessing.get_context("spawn").Process(
        target=_serve_plain, args=(address, plain_tq), daemon=True
    )
    plain_proc.start()
    whitelist = await LiveWhitelist(
        url, sealed_by=keys.load(settings).signer().public_key()
    ).start()
    try:
        all_ready([p for started in procs.values() for _, p in started])
        for shape, started in procs.items():
            for role in ROLES[:3]:
                pids = [p.process.pid for a, p in started if role_of(a) == role]
                groups[shape][role] = lambda pids=pids: [psutil.Process(pid) for pid in pids]  # type: ignore[misc]
        plain_pid = plain_proc.pid
        assert plain_pid is not None
        groups[PLAIN][ROLES[3]] = lambda: [psutil.Process(plain_pid)]
        client = await connect(settings, address)
        # plain Temporal's starts with its own converter, not renkei's encrypted payloads
        plain_client = await Client.connect(address, data_converter=pydantic_data_converter)
        sdks = {s: RenkeiClient(client, per_shape[s]) for s in (ONE, OWN, TWO)}
        rates: dict[str, list[float]] = {s: [] for s in SHAPES}
        last: dict[str, bf.Measured] = {}
        spent: dict[str, dict[str, float]] = {}
        async with running_workers(client, pool, per_shape[ONE], default_catalog(), whitelist):

            async def once(shape: str, n: int, one_by_one: int) -> bf.Measured:
                if shape == PLAIN:
                    return await _plain(plain_client, plain_tq, n, one_by_one)
                return await bf.renkei(sdks[shape], per_shape[shape], QUERIES[0], n, one_by_one)

            for shape in SHAPES:  # warm up every path
                await once(shape, 5, 0)
            for i in range(ROUNDS):
                for shape in SHAPES:
                    meter.groups = groups[shape]
                    before = meter.snapshot()
                    t0 = time.perf_counter()
                    got = await once(shape, flows, serial if i == ROUNDS - 1 else 0)
                    if i == 0:
                        spent[shape] = bf.CpuMeter.spent(before, meter.snapshot())
                        spent[shape]["wall"] = time.perf_counter() - t0
                    rates[shape].append(got.flows_per_s)
                    last[shape] = got
    finally:
        await whitelist.stop()
        for started in procs.values():
            for _, p in started:
                p.stop()
        plain_proc.terminate()
        plain_proc.join(20)
    for shape in SHAPES:
        last[shape].flows_per_s = statistics.median(rates[shape])
    return rates, last, spent, flows, serial


def report(
    last: Mapping[str, bf.Measured],
    spent: Mapping[str, Mapping[str, float]],
    flows: int,
    serial: int,
) -> list[str]:
    plain = last[PLAIN].flows_per_s
    n = QUERIES[0]
    lines = [
        f"| {n}-query flows, {flows} at once (median of {ROUNDS} rounds, alternating)"
        " | flows/s | linkages/s | ratio to plain | start-to-result p50"
        f" ({serial} one by one) | wall time of the first round |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for shape in SHAPES:
        m = last[shape]
        lines.append(
            f"| {shape} | {m.flows_per_s:.1f} | {n * m.flows_per_s:.0f}"
            f" | **{m.flows_per_s / plain:.2f}** |"
            f" {m.pct(50):.1f} ms | {spent[shape]['wall']:.1f} s |"
        )
    cpu = {s: {g: v for g, v in spent[s].items() if g != "wall"} for s in spent}
    return [*lines, "", *cpu_table(cpu, flows)]
