"""Records chained inline against records written unchained and chained behind (issue #16).

``python -m bench chain``: one fresh stack; in alternating rounds (median of three), on the
hub's one chain:

- access records from concurrent writers, one record per transaction as a linkage writes them,
  signed by the hub: inline (chained under the chain's lock in the writer's transaction) and
  deferred (written unchained; the hub's chainer links them behind, in the same process).
  Deferred also reports how long the last record waited for its place once the writers stopped;
- 3-query flows: plain Temporal, renkei inline and renkei deferred, each worker set on its own
  task queues, all running at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.client import Client

from bench import flows as bf
from bench.flows import Measured
from bench.records import _record
from renkei.app.client import RenkeiClient
from renkei.kernel import keys, records
from renkei.kernel.db import create_pool
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from workers.assembly import live_whitelist, running_workers

ROUNDS = 3
WRITERS = (8, 32, 128)  # concurrent linkages writing to one chain
# The production shape of one chain (:func:`process_rounds`): the 128 writers split over this
# many processes of their own, the keeper's chainer in one more.
WRITER_PROCESSES = (1, 2)


async def writes(
    pool: asyncpg.Pool,
    signer: records.RecordSigner,
    writers: int,
    total: int,
    chainer: records.Chainer | None = None,
    group: records.GroupWriter | None = None,
) -> tuple[float, float, float]:
    """(records/s written durably, records/s chained, seconds until the last was chained).
    With ``chainer`` (running), records are written unchained and it links them; with
    ``group`` too, concurrent writers' records share commits."""
    per_writer = total // writers

    async def writer() -> None:
        for i in range(per_writer):
            if group is not None:
                await group.write(_record(records.HUB, i), signer=signer)
            else:
                await records.write(
                    pool, _record(records.HUB, i), signer=signer, deferred=chainer is not None
                )

    t0 = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    written = time.perf_counter()
    if chainer is not None:  # under the chain's lock: returns once every record is linked
        await chainer.run_once()
    chained = time.perf_counter()
    n = per_writer * writers
    return n / (written - t0), n / (chained - t0), chained - written


async def record_rounds(
    pool: asyncpg.Pool, settings: Settings, quick: bool
) -> dict[str, dict[str, float]]:
    """Records/s on one chain, inline and deferred, at 8 and 32 writers; medians of rounds.
    The chainer runs during the deferred rounds only (with inline chaining, none runs)."""
    signer = records.RecordSigner(records.HUB, keys.load(settings).signer())
    total = 2_000 if quick else 10_000
    out: dict[str, dict[str, float]] = {}
    for writers in WRITERS:
        got: dict[str, list[tuple[float, float, float]]] = {
            "inline": [],
            "deferred": [],
            "deferred, group commit": [],
        }
        for _ in range(ROUNDS):
            got["inline"].append(await writes(pool, signer, writers, total))
            async with records.Chainer(pool, signer) as chainer:
                got["deferred"].append(await writes(pool, signer, writers, total, chainer))
                got["deferred, group commit"].append(
                    await writes(pool, signer, writers, total, chainer, records.GroupWriter(pool))
                )
        for mode, runs in got.items():
            out[f"{writers} writers, {mode}"] = {
                "written": statistics.median(r[0] for r in runs),
                "chained": statistics.median(r[1] for r in runs),
                "lag": max(r[2] for r in runs),
            }
    # A burst: as many calls at once as records, then the chainer alone over all of them (what
    # each side does when it does not share the process's CPU with the other).
    # The CPU a link costs, the database's and the chainer's (this process's), measured around
    # the chainer's pass.
    meter = bf.CpuMeter(psutil.Process(await pool.fetchval("SELECT pg_backend_pid()")).ppid())
    bursts: list[tuple[float, float, float, float]] = []
    for _ in range(ROUNDS):
        group = records.GroupWriter(pool)
        t0 = time.perf_counter()
        await asyncio.gather(
            *(group.write(_record(records.HUB, i), signer=signer) for i in range(total))
        )
        t1 = time.perf_counter()
        before = meter.snapshot()
        linked = await records.Chainer(pool, signer).run_once()
        t2 = time.perf_counter()
        spent = bf.CpuMeter.spent(before, meter.snapshot())
        bursts.append(
            (
                total / (t1 - t0),
                linked / (t2 - t1),
                spent["PostgreSQL"] / linked,
                spent["workers and clients (this process)"] / linked,
            )
        )
    out[f"a burst of {total:,} calls at once, group commit; then the chainer alone"] = {
        "written": statistics.median(b[0] for b in bursts),
        "chained": statistics.median(b[1] for b in bursts),
        "lag": 0.0,
        "database_us": statistics.median(b[2] for b in bursts) * 1e6,
        "chainer_us": statistics.median(b[3] for b in bursts) * 1e6,
    }
    return out


async def flow_rounds(
    env_client: Client,
    encrypted: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    url: str,
    quick: bool,
) -> dict[str, list[Measured]]:
    """3-query flows, plain, renkei inline and renkei deferred, alternating; both renkei worker
    sets run at once on task queues of their own."""
    deferred = settings.model_copy(
        update={
            "records_chaining": "deferred",
            "task_queue_prefix": settings.task_queue_prefix + "d",
        }
    )
    flows, serial = (30, 10) if quick else (100, 30)
    got: dict[str, list[Measured]] = {"plain": [], "inline": [], "deferred": []}
    async with (
        live_whitelist(url, keys.load(settings).signer().public_key()) as whitelist,
        running_workers(encrypted, pool, settings, default_catalog(), whitelist),
        running_workers(encrypted, pool, deferred, default_catalog(), whitelist),
    ):
        sdks = {
            "inline": RenkeiClient(encrypted, settings),
            "deferred": RenkeiClient(encrypted, deferred),
        }
        await bf.plain(env_client, 3, 5, 0)  # warm up every path
        for mode, sdk in sdks.items():
            await bf.renkei(sdk, settings if mode == "inline" else deferred, 3, 5, 0)
        for _ in range(ROUNDS):
            got["plain"].append(await bf.plain(env_client, 3, flows, serial))
            for mode, sdk in sdks.items():
                got[mode].append(
                    await bf.renkei(
                        sdk, settings if mode == "inline" else deferred, 3, flows, serial
                    )
                )
    return got


def report(writes: dict[str, dict[str, float]], flows: dict[str, list[Measured]]) -> list[str]:
    lines = [
        "| records on the hub's one chain, one per transaction, signed | written durably, records/s"
        " | chained, records/s | last record's wait for its place |",
        "| --- | --- | --- | --- |",
    ]
    for label, r in writes.items():
        lag = (
            f"{r['lag'] * 1000:.0f} ms"
            if "deferred" in label
            else "none (chained as written)"
            if "inline" in label
            else f"(the chainer's own rate; CPU a link: the database {r['database_us']:.0f} µs,"
            f" the chainer {r['chainer_us']:.0f} µs)"
        )
        lines.append(f"| {label} | {r['written']:,.0f} | {r['chained']:,.0f} | {lag} |")
    for writers in WRITERS:
        inline = writes[f"{writers} writers, inline"]
        for mode in ("deferred", "deferred, group commit"):
            ours = writes[f"{writers} writers, {mode}"]
            lines.append(
                f"| {writers} writers, {mode} / inline"
                f" | **{ours['written'] / inline['written']:.2f}**"
                f" | **{ours['chained'] / inline['chained']:.2f}** | |"
            )
    rate = {m: statistics.median(x.flows_per_s for x in runs) for m, runs in flows.items()}
    p50 = {
        m: statistics.median(statistics.median(x.latencies_ms) for x in runs)
        for m, runs in flows.items()
    }
    lines += [
        "",
        "| 3-query flows | flows/s | linkages/s | ratio to plain | p50 | p50 / plain |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for mode in ("plain", "inline", "deferred"):
        lines.append(
            f"| {mode if mode == 'plain' else 'renkei, ' + mode} | {rate[mode]:.1f}"
            f" | {3 * rate[mode]:.1f} | **{rate[mode] / rate['plain']:.2f}** | {p50[mode]:.0f} ms"
            f" | {p50[mode] / p50['plain']:.2f} |"
        )
    return lines


# The production shape of one chain: its writers are the workers of the parties whose linkages
# it records (for the hub's chain, each of the hub's worker processes), its chainer the keeper's
# worker; none of them shares an interpreter with another.


def _settings(url: str, keys_file: str) -> Settings:
    return Settings(database_url=url, temporal_address="-", keys_file=Path(keys_file))


def _writer_process(
    url: str, keys_file: str, writers: int, per_writer: int, ready: Any, go: Event, out: Any
) -> None:
    asyncio.run(_writer_main(url, keys_file, writers, per_writer, ready, go, out))


async def _writer_main(
    url: str, keys_file: str, writers: int, per_writer: int, ready: Any, go: Event, out: Any
) -> None:
    settings = _settings(url, keys_file)
    signer = records.RecordSigner(records.HUB, keys.load(settings).signer())
    pool = await create_pool(url, max_size=20)
    try:
        group = records.GroupWriter(pool)
        await group.write(_record(records.HUB, -1), signer=signer)  # warm: connections, code

        async def writer() -> None:
            for i in range(per_writer):
                await group.write(_record(records.HUB, i), signer=signer)

        ready.put(True)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        t0 = time.time()
        await asyncio.gather(*(writer() for _ in range(writers)))
        out.put((t0, time.time()))
    finally:
        await pool.close()


def _chainer_process(url: str, keys_file: str, ready: Any, stop: Event) -> None:
    asyncio.run(_chainer_main(url, keys_file, ready, stop))


async def _chainer_main(url: str, keys_file: str, ready: Any, stop: Event) -> None:
    settings = _settings(url, keys_file)
    signer = records.RecordSigner(records.HUB, keys.load(settings).signer())
    pool = await create_pool(url, max_size=4)
    try:
        async with records.Chainer(pool, signer):
            ready.put(True)
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    finally:
        await pool.close()


async def _unchained(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM records.access_records WHERE keeper = $1"
            " AND chain_seq IS NULL)",
            records.HUB,
        )
    )


async def in_processes(
    pool: asyncpg.Pool, settings: Settings, processes: int, total: int, writers: int = 128
) -> tuple[float, float, float]:
    """(records/s written durably, records/s chained, seconds until the last was chained) with
    ``writers`` concurrent writers on the hub's chain split over ``processes`` processes (group
    commit in each), and the hub's chainer running in a process of its own."""
    assert settings.database_url and settings.keys_file
    url, keys_file = settings.database_url, str(settings.keys_file)
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    per_process = writers // processes
    per_writer = total // writers
    chainer = ctx.Process(target=_chainer_process, args=(url, keys_file, ready, stop))
    parts = [
        ctx.Process(
            target=_writer_process,
            args=(url, keys_file, per_process, per_writer, ready, go, out),
        )
        for _ in range(processes)
    ]
    loop = asyncio.get_running_loop()
    for p in (chainer, *parts):
        p.start()
    try:
        for _ in range(processes + 1):
            await loop.run_in_executor(None, ready.get, True, 120)
        # the writers' warm-up records linked first (the chainer is another process: polled)
        while await _unchained(pool):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        go.set()
        spans = [await loop.run_in_executor(None, out.get, True, 600) for _ in parts]
        while await _unchained(pool):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        chained = time.time()
    finally:
        stop.set()
        for p in (chainer, *parts):
            await loop.run_in_executor(None, p.join, 60)
            if p.is_alive():
                p.kill()
    t0 = min(s[0] for s in spans)
    written = max(s[1] for s in spans)
    n = per_writer * per_process * processes
    return n / (written - t0), n / (chained - t0), chained - written


async def process_rounds(
    pool: asyncpg.Pool, settings: Settings, quick: bool
) -> dict[str, dict[str, float]]:
    """Records/s on the hub's one chain from 128 writers: in one process with the chainer (as in
    :func:`record_rounds`), and in :data:`WRITER_PROCESSES` processes with the chainer in one of
    its own; alternating rounds, medians."""
    signer = records.RecordSigner(records.HUB, keys.load(settings).signer())
    total = 10_000 if quick else 20_000  # a second or more of writing: the lag is not the rate
    got: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(ROUNDS):
        label = "128 writers and the chainer in one process"
        async with records.Chainer(pool, signer) as chainer:
            got.setdefault(label, []).append(
                await writes(pool, signer, 128, total, chainer, records.GroupWriter(pool))
            )
        for processes in WRITER_PROCESSES:
            label = (
                f"128 writers in {processes} process{'es' if processes > 1 else ''},"
                " the chainer in one of its own"
            )
            got.setdefault(label, []).append(await in_processes(pool, settings, processes, total))
    return {
        label: {
            "written": statistics.median(r[0] for r in runs),
            "chained": statistics.median(r[1] for r in runs),
            "lag": max(r[2] for r in runs),
        }
        for label, runs in got.items()
    }


def process_report(rates: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "| the hub's one chain, one record per call, signed, group commit | written durably,"
        " records/s | chained, records/s (target ≥ 5,000) | last record's wait for its place |",
        "| --- | --- | --- | --- |",
    ]
    for label, r in rates.items():
        lines.append(
            f"| {label} | {r['written']:,.0f} | **{r['chained']:,.0f}** | {r['lag'] * 1000:.0f} ms |"
        )
    return lines
