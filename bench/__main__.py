"""``python -m bench [--quick] [all|flows|citizen]``.

``flows``: throughput of a 3-query BPF against a plain Temporal workflow with 3 no-op activities
on the same dev server, and the whitelist decision time for the real table and for 100,000
synthetic rows; prints ratios measured in this run. ``citizen``: the citizen endpoint's latency
for one citizen's 1,000 records among 1,000,000 (see ``bench/citizen.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.agencies.synthetic import generate
from activities.models import StartFlow
from bench.plain import PlainThree, noop
from renkei import keys
from renkei.bootstrap import prepare
from renkei.client import RenkeiClient, connect
from renkei.db import create_pool, migrate
from renkei.pseudonyms import derive_code
from renkei.search_attributes import ALL
from renkei.settings import Settings
from renkei.stack import start_postgres, temporal_cli
from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.models import WhitelistRow
from workers.dev import running_workers


async def _plain(env: WorkflowEnvironment, flows: int) -> float:
    tq = f"plain-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=tq, workflows=[PlainThree], activities=[noop]):
        t0 = time.perf_counter()
        handles = [
            await env.client.start_workflow(
                PlainThree.run, "x", id=f"plain-{uuid.uuid4()}", task_queue=tq
            )
            for _ in range(flows)
        ]
        await asyncio.gather(*(h.result() for h in handles))
        return flows / (time.perf_counter() - t0)


async def _renkei(
    env: WorkflowEnvironment, settings: Settings, pool: asyncpg.Pool, flows: int
) -> float:
    # child-allowance-check: 2 linkages + the hub's lookups; child-rearing single parent: 2.
    # A 3-query flow: the cohabiting child-rearing allowance check (3 linkages).
    hh = generate(settings.sample_residents)
    couples = [h for h in hh if h.kind == "family" and h.municipality == "city-minato"]
    # renkei's own client: encrypted payloads, as in production; the baseline stays plain.
    encrypted = await connect(settings, env.client.service_client.config.target_host)
    client = RenkeiClient(encrypted, settings)
    assert settings.database_url
    async with running_workers(encrypted, pool, settings, default_catalog(), settings.database_url):
        t0 = time.perf_counter()
        handles = []
        for i in range(flows):
            h = couples[i % len(couples)]
            handles.append(
                await client.start(
                    StartFlow(
                        bpf="child-rearing-allowance-income-check",
                        executor="pref-tokyo",
                        subject=derive_code(
                            keys.load(settings).hub_key, "pref-tokyo", h.members[0].subject_id
                        ),
                        inputs={
                            "spouse": derive_code(
                                keys.load(settings).hub_key, "pref-tokyo", h.members[1].subject_id
                            ),
                            "municipality": "city-minato",
                        },
                        case_ref=f"bench-{uuid.uuid4().hex[:12]}",
                    )
                )
            )
        await asyncio.gather(*(h.result() for h in handles))
        return flows / (time.perf_counter() - t0)


def _decision_us(index: WhitelistIndex, n: int) -> float:
    day = dt.date(2026, 11, 26)
    req, prov = ("prefectural-governor", "prefectural-governor-etc"), ("municipal-mayor",)
    t0 = time.perf_counter()
    for _ in range(n):
        index.decide(req, "child-rearing-allowance", prov, "local-tax", day)
    return (time.perf_counter() - t0) / n * 1e6


@contextlib.asynccontextmanager
async def _stack(
    sample_residents: int,
) -> AsyncIterator[tuple[WorkflowEnvironment, asyncpg.Pool, Settings, str]]:
    """A fresh embedded PostgreSQL and Temporal dev server for one benchmark, removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="renkei-bench-"))
    pg, url = start_postgres(tmp)
    settings = Settings(
        database_url=url,
        temporal_address="-",
        sample_residents=sample_residents,
        task_queue_prefix=f"bench{uuid.uuid4().hex[:6]}",
        keys_file=tmp / "keys.json",
        mode="test",  # the sample definitions are registered as drafts here
    )
    await migrate(url)
    pool = await create_pool(url, max_size=20)
    try:
        await prepare(pool, settings)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            data_converter=pydantic_data_converter,
            search_attributes=list(ALL),
            ui=False,
            dev_server_log_level="error",
        )
        try:
            yield env, pool, settings, url
        finally:
            await env.shutdown()
    finally:
        await pool.close()
        pg.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)


async def main(quick: bool) -> None:
    flows = 30 if quick else 200
    rows = load_annex2(default_catalog())
    real = WhitelistIndex(rows)
    synthetic = WhitelistIndex(
        rows
        + [
            WhitelistRow(
                id=f"syn/{i}",
                source="syn",
                item="syn",
                requester_role=f"r{i % 997}",
                task=f"t{i % 1009}",
                provider_role=f"p{i % 991}",
                info=f"i{i % 983}",
                legal_text="syn",
                valid_from=dt.date(2020, 1, 1),
            )
            for i in range(100_000)
        ]
    )
    n = 20_000 if quick else 200_000
    us_real, us_big = _decision_us(real, n), _decision_us(synthetic, n)

    async with _stack(sample_residents=400) as (env, pool, settings, _):
        await _plain(env, 5)  # warm up both paths
        await _renkei(env, settings, pool, 3)
        plain = await _plain(env, flows)
        bpf = await _renkei(env, settings, pool, flows)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"flows per run: {flows}")
    print(f"plain Temporal, 3 no-op activities : {plain:8.1f} flows/s")
    print(f"renkei BPF, 3 whitelisted queries  : {bpf:8.1f} flows/s  ({3 * bpf:.1f} linkages/s)")
    print(f"ratio BPF / plain                  : {bpf / plain:8.2f}  (target ≥ 0.8)")
    print(f"whitelist decision, real table ({len(real)} rows): {us_real:6.2f} µs")
    print(
        f"whitelist decision, +100,000 rows ({len(synthetic)}): {us_big:6.2f} µs  (ratio {us_big / us_real:.2f})"
    )


async def citizen(quick: bool) -> None:
    from bench.citizen import run

    r = await run(quick)
    print(
        f"citizen endpoint, 1,000 of {r['total']:,.0f} records: median {r['p50_ms']:.1f} ms,"
        f" p95 {r['p95_ms']:.1f} ms  (target < 50 ms; loading took {r['load_s']:.0f} s)"
    )


async def waiting(quick: bool) -> None:
    from bench.waiting import plain_waiting, renkei_waiting
    from whitelist.store import LiveWhitelist

    n = 1_000 if quick else 10_000
    async with _stack(sample_residents=100) as (env, pool, settings, url):
        whitelist = await LiveWhitelist(url).start()
        try:
            encrypted = await connect(settings, env.client.service_client.config.target_host)
            plain = await plain_waiting(env.client, n)
            ours = await renkei_waiting(encrypted, pool, settings, whitelist, n)
        finally:
            await whitelist.stop()
    print(f"{n:,} flows waiting at once (plain: a workflow waiting for one signal)")
    for label, key, unit in (
        ("start all and see them waiting", "waiting_s", "s"),
        ("resume all by signal", "resume_s", "s"),
        ("worker process resident memory while waiting", "rss_mib", "MiB"),
    ):
        print(
            f"  {label:46}: renkei {ours[key]:8.1f} {unit}   plain {plain[key]:8.1f} {unit}"
            f"   ratio {ours[key] / plain[key]:5.2f}"
        )
    print(
        f"  target: renkei worker under 1,024 MiB resident → {'met' if ours['rss_mib'] < 1024 else 'NOT met'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument(
        "which",
        nargs="?",
        choices=["all", "flows", "citizen", "waiting"],
        default="all",
        help="what to run",
    )
    args = parser.parse_args()
    if args.which in ("all", "flows"):
        asyncio.run(main(args.quick))
    if args.which in ("all", "citizen"):
        asyncio.run(citizen(args.quick))
    if args.which in ("all", "waiting"):
        asyncio.run(waiting(args.quick))
