"""Many flows waiting at once: N portal applications waiting for consent, then all resumed.

Measures, against a plain Temporal workflow waiting for one signal on the same dev server in the
same run:

- the time to start N and have every one of them waiting: from before the first start to the
  moment the last flow's workflow task that began its wait completed (read from each flow's
  history, the same way for both sides);
- the resident memory of the worker process while they wait;
- the time to resume them all by signal, until every one has its answer and has completed.

Each side's worker runs in a fresh process of its own, with the flows' starter and nothing else:
for renkei, the executor's control worker (its flows run there; the hub's worker runs in the
bench's own process, as a deployment runs it in the hub's), for plain Temporal, the plain
worker. Both keep the same number of runs in their workflow cache (:data:`CACHE`), so their
memory compares like with like: with more flows waiting than the cache holds, both evict and
replay, and neither grows with the number of flows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import multiprocessing
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.anatomy import Started, WaitSide
from bench.plain import PlainWait
from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.bpf.loader import load_file
from renkei.contracts.messages import Response, StartFlow
from renkei.kernel import keys
from renkei.kernel.db import create_pool
from renkei.kernel.pseudonyms import Pseudonyms, derive_code
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from workers.assembly import running_workers
from workers.control import control_worker
from workers.plugin import attach_registry, connect, party_client

DEFINITION = Path(__file__).parent / "definitions" / "wait-only.yaml"
EXECUTOR = "city-minato"
# The workflow cache of both sides' workers: the SDK's default (1,000 runs), set explicitly.
CACHE = 1_000


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _gather(n: int, job: Callable[[int], Awaitable[Any]], width: int = 64) -> list[Any]:
    gate = asyncio.Semaphore(width)

    async def one(i: int) -> Any:
        async with gate:
            return await job(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _until(client: Client, query: str, n: int) -> None:
    while await _count(client, query) < n:  # noqa: ASYNC110 - visibility is polled
        await asyncio.sleep(0.5)


async def _waiting_since(client: Client, wid: str) -> float:
    """When ``wid`` began waiting: the time its last completed workflow task ended (a waiting
    flow has nothing after it). Polled until it has one."""
    while True:
        last = None
        async for event in client.get_workflow_handle(wid).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                last = event.event_time.ToDatetime().timestamp()
        if last is not None:
            return last
        await asyncio.sleep(0.2)


async def _measure(
    client: Client,
    ids: list[str],
    start: Callable[[int], Awaitable[Any]],
    seen_waiting: Callable[[], Awaitable[None]],
    resume: Callable[[int], Awaitable[Any]],
    completed: str,
    base: float,
) -> dict[str, float]:
    t0 = time.time()
    await _gather(len(ids), start)
    await seen_waiting()
    # From the histories: the moment the last flow's wait began (the server's clock, this
    # machine's, as t0). The same reading for both sides.
    since = await _gather(len(ids), lambda i: _waiting_since(client, ids[i]))
    all_waiting = max(since) - t0
    gc.collect()
    waiting_rss = rss_mib()
    t1 = time.perf_counter()
    await _gather(len(ids), resume)
    await _until(client, completed, len(ids))
    resumed = time.perf_counter() - t1
    return {
        "waiting_s": all_waiting,
        "rss_mib": waiting_rss,
        "rss_growth_mib": waiting_rss - base,
        "resume_s": resumed,
    }


async def _renkei(address: str, settings: Settings, n: int) -> dict[str, float]:
    """The executor's side: its control worker and its starts, in this process."""
    pool = await create_pool(str(settings.database_url), max_size=4)
    try:
        client = await connect(settings, address, org=EXECUTOR)
        sdk = RenkeiClient(client, settings)
        subject = derive_code(keys.load(settings).hub_key, EXECUTOR, uuid.UUID(int=1))
        own = party_client(client, settings, [EXECUTOR], legacy_ring=False)
        attach_registry(own, pool, settings)
        tag = uuid.uuid4().hex[:6]
        prefix = f"bench-wait-only/{EXECUTOR}/w{tag}"
        ids = [f"{prefix}-{i}" for i in range(n)]
        base = rss_mib()
        async with control_worker(own, settings, EXECUTOR, max_cached_workflows=CACHE):

            async def start(i: int) -> None:
                await sdk.start(
                    StartFlow(
                        bpf="bench-wait-only",
                        executor=EXECUTOR,
                        subject=subject,
                        trigger="portal",
                        case_ref=f"w{tag}-{i}",
                    )
                )

            async def resume(i: int) -> None:
                await client.get_workflow_handle(ids[i]).signal(
                    "renkei.respond", Response(step="consent", payload={"agree": True})
                )

            return await _measure(
                client,
                ids,
                start,
                lambda: _until(
                    client,
                    f"RenkeiStatus = 'waiting' AND WorkflowId STARTS_WITH '{prefix}'",
                    n,
                ),
                resume,
                f"WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Completed'",
                base,
            )
    finally:
        await pool.close()


async def _plain(address: str, n: int) -> dict[str, float]:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    tq = f"plain-wait-{uuid.uuid4().hex[:6]}"
    ids = [f"{tq}-{i}" for i in range(n)]
    base = rss_mib()
    async with Worker(client, task_queue=tq, workflows=[PlainWait], max_cached_workflows=CACHE):
        return await _measure(
            client,
            ids,
            lambda i: client.start_workflow(PlainWait.run, id=ids[i], task_queue=tq),
            # a plain workflow says nothing of its own: its history tells when it waits
            lambda: _until(client, f"WorkflowId STARTS_WITH '{tq}'", n),
            lambda i: client.get_workflow_handle(ids[i]).signal("answer", True),
            f"WorkflowId STARTS_WITH '{tq}' AND ExecutionStatus = 'Completed'",
            base,
        )


def _side(which: str, address: str, settings: dict[str, Any], n: int) -> dict[str, float]:
    """One side's run, in a fresh process (see the module's docstring)."""
    if which == "plain":
        return asyncio.run(_plain(address, n))
    return asyncio.run(_renkei(address, Settings.model_validate(settings), n))


async def _in_own_process(which: str, address: str, settings: Settings, n: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as proc:
        return await asyncio.get_running_loop().run_in_executor(
            proc, _side, which, address, settings.model_dump(mode="json"), n
        )


async def renkei_waiting(
    client: Client, pool: Any, settings: Settings, whitelist: Any, n: int
) -> dict[str, float]:
    """N renkei flows: the hub's worker here, the executor's control worker in its own process."""
    await registry.register(pool, load_file(DEFINITION))
    s = settings.model_copy(
        update={"mode": "test", "task_queue_prefix": f"wait{uuid.uuid4().hex[:6]}"}
    )
    await Pseudonyms(pool, keys.load(s).hub_key).enroll([uuid.UUID(int=1)], [EXECUTOR])
    address = client.service_client.config.target_host
    endpoints = dict(s.linkage_endpoints)  # the hub's endpoint, once its worker serves it
    async with running_workers(
        client,
        pool,
        s,
        default_catalog(),
        whitelist,
        agencies=(),
        executors=(),
        endpoints=endpoints,
    ):
        # The executor's process is told where the hub's endpoint is, as a deployment tells it.
        wired = s.model_copy(update={"linkage_endpoints": endpoints})
        return await _in_own_process("renkei", address, wired, n)


async def plain_waiting(client: Client, settings: Settings, n: int) -> dict[str, float]:
    """N plain workflows waiting for one signal, their worker in its own process."""
    return await _in_own_process("plain", client.service_client.config.target_host, settings, n)


async def wait_side(client: Client, pool: Any, settings: Settings, sdk: RenkeiClient) -> WaitSide:
    """renkei's waiting flow for ``python -m bench anatomy`` (bench/anatomy.py): started by the
    executor's client, counted as waiting by its status, resumed by the person's answer. The
    caller runs the hub's and the executor's workers."""
    await registry.register(pool, load_file(DEFINITION))
    await Pseudonyms(pool, keys.load(settings).hub_key).enroll([uuid.UUID(int=1)], [EXECUTOR])
    subject = derive_code(keys.load(settings).hub_key, EXECUTOR, uuid.UUID(int=1))
    tag = uuid.uuid4().hex[:6]
    count = iter(range(10**9))

    async def start() -> Started:
        h = await sdk.start(
            StartFlow(
                bpf="bench-wait-only",
                executor=EXECUTOR,
                subject=subject,
                trigger="portal",
                case_ref=f"a{tag}-{next(count)}",
            )
        )
        return (
            lambda: h.signal("renkei.respond", Response(step="consent", payload={"agree": True})),
            h.result,
        )

    async def waiting(n: int) -> bool:
        query = "WorkflowType = 'bench-wait-only' AND RenkeiStatus = 'waiting'"
        for _ in range(20):  # visibility is a moment behind
            if await _count(client, query) == n:
                return True
            await asyncio.sleep(0.25)
        return False

    return WaitSide(start, waiting=waiting)
