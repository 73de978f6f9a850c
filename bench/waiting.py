"""Many flows waiting at once: N portal applications waiting for consent, then all resumed.

Measures, against a plain Temporal workflow waiting for one signal on the same dev server in the
same run: the time to start N and have them all waiting, the resident memory of the worker
process (the control worker and its workflow cache) while they wait, and the time to resume
them all by signal.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bench.plain import PlainWait
from renkei.app.client import RenkeiClient
from renkei.bpf import registry
from renkei.bpf.loader import load_file
from renkei.contracts.messages import Response, StartFlow
from renkei.kernel import keys
from renkei.kernel.pseudonyms import derive_code
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from workers.assembly import running_workers

DEFINITION = Path(__file__).parent / "definitions" / "wait-only.yaml"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _gather(n: int, job: Callable[[int], Awaitable[Any]], width: int = 64) -> None:
    gate = asyncio.Semaphore(width)

    async def one(i: int) -> None:
        async with gate:
            await job(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _until(client: Client, query: str, n: int) -> None:
    while await _count(client, query) < n:  # noqa: ASYNC110 - visibility is polled
        await asyncio.sleep(0.5)


async def renkei_waiting(
    client: Client, pool: Any, settings: Settings, whitelist: Any, n: int
) -> dict[str, float]:
    await registry.register(pool, load_file(DEFINITION))
    s = settings.model_copy(
        update={"mode": "test", "task_queue_prefix": f"wait{uuid.uuid4().hex[:6]}"}
    )
    sdk = RenkeiClient(client, s)
    subject = derive_code(keys.load(s).hub_key, "city-minato", uuid.UUID(int=1))
    from renkei.kernel.pseudonyms import Pseudonyms

    await Pseudonyms(pool, keys.load(s).hub_key).enroll([uuid.UUID(int=1)], ["city-minato"])
    tag = uuid.uuid4().hex[:6]
    base = rss_mib()
    async with running_workers(client, pool, s, default_catalog(), whitelist, agencies=()):
        t0 = time.perf_counter()

        async def start(i: int) -> None:
            await sdk.start(
                StartFlow(
                    bpf="bench-wait-only",
                    executor="city-minato",
                    subject=subject,
                    trigger="portal",
                    case_ref=f"w{tag}-{i}",
                )
            )

        await _gather(n, start)
        await _until(
            client,
            f"RenkeiBpf = 'bench-wait-only' AND RenkeiStatus = 'waiting' AND WorkflowId STARTS_WITH 'bench-wait-only/city-minato/w{tag}'",
            n,
        )
        all_waiting = time.perf_counter() - t0
        waiting_rss = rss_mib()
        t1 = time.perf_counter()

        async def resume(i: int) -> None:
            await client.get_workflow_handle(f"bench-wait-only/city-minato/w{tag}-{i}").signal(
                "renkei.respond", Response(step="consent", payload={"agree": True})
            )

        await _gather(n, resume)
        await _until(
            client,
            f"WorkflowId STARTS_WITH 'bench-wait-only/city-minato/w{tag}' AND ExecutionStatus = 'Completed'",
            n,
        )
        resumed = time.perf_counter() - t1
    return {
        "waiting_s": all_waiting,
        "rss_mib": waiting_rss,
        "rss_growth_mib": waiting_rss - base,
        "resume_s": resumed,
    }


async def plain_waiting(client: Client, n: int) -> dict[str, float]:
    tq = f"plain-wait-{uuid.uuid4().hex[:6]}"
    base = rss_mib()
    async with Worker(client, task_queue=tq, workflows=[PlainWait]):
        t0 = time.perf_counter()
        await _gather(
            n, lambda i: client.start_workflow(PlainWait.run, id=f"{tq}-{i}", task_queue=tq)
        )
        # a plain workflow has no status attribute: wait until its first task ran
        await asyncio.sleep(0)
        await _until(client, f"WorkflowId STARTS_WITH '{tq}' AND ExecutionStatus = 'Running'", n)
        await asyncio.sleep(1)
        all_waiting = time.perf_counter() - t0
        waiting_rss = rss_mib()
        t1 = time.perf_counter()
        await _gather(n, lambda i: client.get_workflow_handle(f"{tq}-{i}").signal("answer", True))
        await _until(client, f"WorkflowId STARTS_WITH '{tq}' AND ExecutionStatus = 'Completed'", n)
        resumed = time.perf_counter() - t1
    return {
        "waiting_s": all_waiting,
        "rss_mib": waiting_rss,
        "rss_growth_mib": waiting_rss - base,
        "resume_s": resumed,
    }
