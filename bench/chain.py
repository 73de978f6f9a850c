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
import statistics
import time

import asyncpg
from temporalio.client import Client

from bench import flows as bf
from bench.flows import Measured
from bench.records import _record
from renkei.app.client import RenkeiClient
from renkei.kernel import keys, records
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from workers.assembly import live_whitelist, running_workers

ROUNDS = 3
WRITERS = (8, 32, 128)  # concurrent linkages writing to one chain


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
    bursts: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        group = records.GroupWriter(pool)
        t0 = time.perf_counter()
        await asyncio.gather(
            *(group.write(_record(records.HUB, i), signer=signer) for i in range(total))
        )
        t1 = time.perf_counter()
        linked = await records.Chainer(pool, signer).run_once()
        bursts.append((total / (t1 - t0), linked / (time.perf_counter() - t1)))
    out[f"a burst of {total:,} calls at once, group commit; then the chainer alone"] = {
        "written": statistics.median(b[0] for b in bursts),
        "chained": statistics.median(b[1] for b in bursts),
        "lag": 0.0,
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
            else "(the chainer's own rate)"
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
