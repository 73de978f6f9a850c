"""``python -m bench [--quick] [all|flows|citizen|waiting|protocol|gateway|chain|chain-shape|shape|anatomy]``.

``flows``: throughput of BPFs of 1, 3 and 10 queries in sequence and of 3 in parallel against
plain Temporal workflows running as many no-op activities on the same dev server, latency, CPU
per flow, and the whitelist decision time for the real table and for 100,000 synthetic rows;
prints ratios measured in this run. ``citizen``: the citizen endpoint's latency
for one citizen's 1,000 records among 1,000,000 (see ``bench/citizen.py``). ``gateway``: a
3-query flow direct and through ``renkei gateway`` (see ``bench/gateway.py``). ``shape``: a
3-query flow with the parties' workers in one process, each in its own, and with two control
worker processes (see ``bench/shape.py``). ``anatomy``: the Temporal server's CPU per flow for
each part of a renkei 1-query flow's and a waiting flow's history, on a plain workflow (see ``bench/anatomy.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from renkei.app.bootstrap import prepare
from renkei.app.client import RenkeiClient
from renkei.app.stack import server_tuning_flags, start_postgres, temporal_cli
from renkei.bpf.loader import parse_text
from renkei.bpf.validation import validate
from renkei.kernel import keys
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.search_attributes import ALL
from renkei.kernel.settings import Settings
from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.models import WhitelistRow
from workers.assembly import live_whitelist, running_workers
from workers.plugin import connect

ROUNDS = 3
# The dev server's dynamic configuration for this run: none (its defaults), or ``--server tuned``
# (renkei.app.stack.SERVER_TUNING: its queues read without the 50 ms tick; docs/benchmarks.md).
SERVER_FLAGS: list[str] = []
# How renkei's flows reach providers in this run (``--transport``): RENKEI_LINKAGE_TRANSPORT.
TRANSPORT: list[str] = ["direct"]
# Queries per flow of the shape bench (--queries), for the command a recorded run names.
SHAPE_QUERIES: list[int] = [3]
LINKAGES = {"queue": "through the providers' queues", "direct": "over the direct channel"}


def _decision_us(index: WhitelistIndex, n: int) -> float:
    day = dt.date(2026, 11, 26)
    req, prov = ("prefectural-governor", "prefectural-governor-etc"), ("municipal-mayor",)
    t0 = time.perf_counter()
    for _ in range(n):
        index.decide(req, "child-rearing-allowance", prov, "local-tax", day)
    return (time.perf_counter() - t0) / n * 1e6


def _screen_us(n: int) -> float:
    """The PIA gate and the emergency stop on top of an allowed decision (whitelist.controls):
    the samples' PIAs in force, one suspension elsewhere."""
    from whitelist.catalog import default_catalog
    from whitelist.controls import ControlsIndex, Suspension, sample_pias, screen
    from whitelist.decide import decide_linkage
    from whitelist.local import all_rows

    catalog = default_catalog()
    rows = all_rows(catalog)
    now = dt.datetime(2026, 11, 26, 3, tzinfo=dt.UTC)
    stop = Suspension(kind="org", target="jps", side="both", reason="bench", operator="b", at=now)
    controls = ControlsIndex(sample_pias(catalog, rows, dt.date(2026, 4, 1)), [stop])
    allowed = decide_linkage(
        catalog,
        WhitelistIndex(rows),
        "pref-tokyo",
        "city-minato",
        "child-rearing-allowance",
        "local-tax",
        now,
    )
    assert allowed.allowed
    t0 = time.perf_counter()
    for _ in range(n):
        screen(
            allowed,
            controls,
            requester="pref-tokyo",
            provider="city-minato",
            task="child-rearing-allowance",
            bpf="child-rearing-allowance-income-check",
            bpf_version=1,
            at=now,
        )
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
        linkage_transport=TRANSPORT[0],
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
            dev_server_extra_args=SERVER_FLAGS,
        )
        try:
            yield env, pool, settings, url
        finally:
            await env.shutdown()
    finally:
        await pool.close()
        pg.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)


def _static_check_ms(reps: int) -> tuple[int, float]:
    """Parse and statically check a 100-step BPF (queries and computations); ms per check."""
    from whitelist.local import load_local

    steps = []
    for i in range(1, 101):
        if i % 3:
            steps.append(f"  - id: q{i}\n    query: {{info: local-tax, provider: city-minato}}")
        else:
            steps.append(
                f"  - id: s{i}\n    set: {{total: q{i - 1}.taxable_income + q{i - 2}.taxable_income}}"
            )
    text = "\n".join(
        [
            "bpf: bench-hundred",
            "version: 1",
            "title: {ja: 百段, en: A hundred steps}",
            "task: child-rearing-allowance",
            "owners: {definer: mhlw, executors: [role:prefectural-governor-etc]}",
            "triggers: [counter]",
            "steps:",
            *steps,
            "result: {total: s99.total}",
        ]
    )
    catalog = default_catalog()
    index = WhitelistIndex([*load_annex2(catalog), *load_local(catalog)])
    issues = validate(parse_text(text, "hundred.yaml"), catalog, index)
    assert not [i for i in issues if i.severity == "error"], issues
    t0 = time.perf_counter()
    for _ in range(reps):
        validate(parse_text(text, "hundred.yaml"), catalog, index)
    return len(steps), (time.perf_counter() - t0) / reps * 1000


async def main(quick: bool) -> list[str]:
    from bench import flows as bf
    from bench import records as br

    flows = 30 if quick else 200
    serial = 20 if quick else 100
    # Throughput is counted in the steady state, for this long (bench.flows._steady).
    window = 5.0 if quick else 20.0
    out: list[str] = []
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
    us_screen = _screen_us(n)
    steps, static_ms = _static_check_ms(5 if quick else 20)

    load_before = os.getloadavg()[0]
    async with _stack(sample_residents=400) as (env, pool, settings, url):
        await bf.register_sequential(pool)
        backend = await pool.fetchval("SELECT pg_backend_pid()")
        meter = bf.CpuMeter(psutil.Process(backend).ppid())
        encrypted = await connect(settings, env.client.service_client.config.target_host)
        sdk = RenkeiClient(encrypted, settings)
        results: dict[int, tuple[bf.Measured, bf.Measured]] = {}
        async with (
            live_whitelist(url, keys.load(settings).signer().public_key()) as whitelist,
            running_workers(encrypted, pool, settings, default_catalog(), whitelist),
        ):
            await bf.plain(env.client, 3, 5, 0)  # warm up both paths
            await bf.renkei(sdk, settings, 3, 5, 0)
            for size in bf.SIZES:
                if size == 3:  # where the CPU goes while flows run at full speed
                    before = meter.snapshot()
                    t0 = time.perf_counter()
                    ended_plain = (await bf.plain(env.client, size, flows, 0, window=window)).ended
                    cpu_plain = bf.CpuMeter.spent(before, meter.snapshot())
                    wall_plain = time.perf_counter() - t0
                    before = meter.snapshot()
                    t0 = time.perf_counter()
                    ended = (await bf.renkei(sdk, settings, size, flows, 0, window=window)).ended
                    cpu = bf.CpuMeter.spent(before, meter.snapshot())
                    wall = time.perf_counter() - t0
                # Throughput is the median of three rounds, plain and renkei alternating (a
                # round of a few seconds on a shared machine is at the mercy of its neighbours).
                rates: tuple[list[float], list[float]] = ([], [])
                for _ in range(ROUNDS - 1):
                    rates[0].append(
                        (await bf.plain(env.client, size, flows, 0, window=window)).flows_per_s
                    )
                    rates[1].append(
                        (await bf.renkei(sdk, settings, size, flows, 0, window=window)).flows_per_s
                    )
                plain = await bf.plain(env.client, size, flows, serial, window=window)
                ours = await bf.renkei(sdk, settings, size, flows, serial, window=window)
                plain.flows_per_s = statistics.median([*rates[0], plain.flows_per_s])
                ours.flows_per_s = statistics.median([*rates[1], ours.flows_per_s])
                results[size] = (plain, ours)
            # 3 queries in one parallel step: CPU per flow from the first round, throughput the
            # median of all rounds.
            par: tuple[list[float], list[float]] = ([], [])
            for i in range(ROUNDS):
                before = meter.snapshot()
                got = await bf.plain(env.client, 3, flows, 0, parallel=True, window=window)
                par[0].append(got.flows_per_s)
                if i == 0:
                    cpu_par_plain = bf.CpuMeter.spent(before, meter.snapshot())
                    ended_par_plain = got.ended
                before = meter.snapshot()
                got = await bf.renkei(sdk, settings, 3, flows, 0, parallel=True, window=window)
                par[1].append(got.flows_per_s)
                if i == 0:
                    cpu_par = bf.CpuMeter.spent(before, meter.snapshot())
                    ended_par = got.ended
        writes = await br.run(pool, quick)
    load_after = os.getloadavg()[0]

    out += [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" {flows} flows kept running at once per throughput run, counted over {window:g} s in"
        f" the steady state (median of {ROUNDS} rounds), then {serial} one by one for latency;"
        f" load average {load_before:.1f} before, {load_after:.1f} after;"
        f" dev server {'tuned (SERVER_TUNING)' if SERVER_FLAGS else 'with its defaults'};"
        f" renkei's linkages {LINKAGES[TRANSPORT[0]]}",
        "",
        "| BPF | plain Temporal flows/s | renkei flows/s | linkages/s (target ≥ 100)"
        " | ratio (target ≥ 0.8; 10 queries ≥ 0.7) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size, (plain, ours) in results.items():
        out.append(
            f"| {size} {'query' if size == 1 else 'queries'} | {plain.flows_per_s:.1f}"
            f" | {ours.flows_per_s:.1f} | {size * ours.flows_per_s:.1f}"
            f" | **{ours.flows_per_s / plain.flows_per_s:.2f}** |"
        )
    par_plain, par_ours = statistics.median(par[0]), statistics.median(par[1])
    out.append(
        f"| 3 queries in parallel | {par_plain:.1f} | {par_ours:.1f} | {3 * par_ours:.1f}"
        f" | **{par_ours / par_plain:.2f}** |"
    )
    plain3, ours3 = results[3]
    out += [
        "",
        "| start-to-result, 3 queries | plain Temporal | renkei | ratio (target ≤ 1.3) |",
        "| --- | --- | --- | --- |",
        f"| p50 | {plain3.pct(50):.1f} ms | {ours3.pct(50):.1f} ms | {ours3.pct(50) / plain3.pct(50):.2f} |",
        f"| p99 | {plain3.pct(99):.1f} ms | {ours3.pct(99):.1f} ms | {ours3.pct(99) / plain3.pct(99):.2f} |",
        "",
        f"| CPU while 3-query flows run, {flows} at once ({ended} and {ended_plain} flows)"
        " | renkei | plain Temporal |",
        "| --- | --- | --- |",
    ]
    for name in cpu:
        out.append(
            f"| {name} | {cpu[name]:.1f} s ({cpu[name] / wall:.0%} of a core)"
            f" | {cpu_plain[name]:.1f} s ({cpu_plain[name] / wall_plain:.0%} of a core) |"
        )
    out.append(f"| wall time | {wall:.1f} s | {wall_plain:.1f} s |")
    # CPU per flow, all processes together: what bounds throughput when the machine is the
    # limit, and far less at the mercy of other load than the wall-clock rates above.
    per_flow = sum(cpu.values()) / ended * 1000
    per_flow_plain = sum(cpu_plain.values()) / ended_plain * 1000
    out.append(
        f"| **CPU per flow**, all of the above | {per_flow:.0f} ms | {per_flow_plain:.0f} ms"
        f" (plain/renkei **{per_flow_plain / per_flow:.2f}**) |"
    )
    per_par = sum(cpu_par.values()) / ended_par * 1000
    per_par_plain = sum(cpu_par_plain.values()) / ended_par_plain * 1000
    out.append(
        f"| **CPU per flow, 3 queries in parallel** | {per_par:.0f} ms | {per_par_plain:.0f} ms"
        f" (plain/renkei **{per_par_plain / per_par:.2f}**) |"
    )
    out += [
        "",
        "| whitelist and static check | value |",
        "| --- | --- |",
        f"| decision, real table ({len(real)} rows) | {us_real:.2f} µs (target < 5) |",
        f"| decision, + 100,000 rows ({len(synthetic)}) | {us_big:.2f} µs (ratio {us_big / us_real:.2f}) |",
        f"| PIA gate and emergency stop, after an allowed decision | {us_screen:.2f} µs |",
        f"| static check of a {steps}-step BPF (parse + validate) | {static_ms:.1f} ms |",
        "",
        "| access records, durable and hash-chained | records/s (target ≥ 5,000) |",
        "| --- | --- |",
        *(f"| {label} | {rate:,.0f} |" for label, rate in writes.items()),
    ]
    return out


async def gateway(quick: bool) -> list[str]:
    """The same 3-query flow direct and through ``renkei gateway`` (see ``bench/gateway.py``)."""
    from bench import flows as bf
    from bench.gateway import run

    async with _stack(sample_residents=400) as (env, pool, settings, url):
        await bf.register_sequential(pool)
        return await run(env.client.service_client.config.target_host, pool, settings, url, quick)


async def shape(quick: bool) -> list[str]:
    """The production shape: workers in one process, a process each, two control processes
    (``bench/shape.py``)."""
    from bench import flows as bf
    from bench import shape as bs

    load_before = os.getloadavg()[0]
    async with _stack(sample_residents=400) as (env, pool, settings, url):
        await bf.register_sequential(pool)
        address = env.client.service_client.config.target_host
        _, last, spent, flows, serial = await bs.run(address, pool, settings, url, quick)
    load_after = os.getloadavg()[0]
    return [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" `bench-seq-{bs.QUERIES[0]}` (Tokyo asks Minato {bs.QUERIES[0]} times); load average"
        f" {load_before:.1f} before,"
        f" {load_after:.1f} after; renkei's linkages {LINKAGES[TRANSPORT[0]]}",
        "",
        *bs.report(last, spent, flows, serial),
    ]


async def anatomy(quick: bool) -> list[str]:
    """The Temporal server's CPU per flow for the parts of a renkei 1-query flow's history and
    a waiting flow's, one at a time on a plain workflow, beside renkei's own
    (``bench/anatomy.py``)."""
    from bench import anatomy as ba
    from bench import flows as bf
    from bench import waiting as bw

    flows, rounds = (60, 5) if quick else (150, 9)
    load_before = os.getloadavg()[0]
    async with _stack(sample_residents=400) as (env, pool, settings, url):
        await bf.register_sequential(pool)
        me = psutil.Process()
        server = [p for p in me.children(recursive=True) if "temporal" in p.name()]

        def server_cpu() -> float:
            return sum(t.user + t.system for t in (p.cpu_times() for p in server))

        encrypted = await connect(settings, env.client.service_client.config.target_host)
        sdk = RenkeiClient(encrypted, settings)
        async with (
            live_whitelist(url, keys.load(settings).signer().public_key()) as whitelist,
            running_workers(encrypted, pool, settings, default_catalog(), whitelist),
        ):
            renkei_start = bf.one_start(sdk, settings, 1)
            results = await ba.run(env.client, server_cpu, renkei_start, flows, rounds)
            renkei_waiting = await bw.wait_side(env.client, pool, settings, sdk)
            waited = await ba.run_waiting(env.client, server_cpu, renkei_waiting, flows, rounds)
    load_after = os.getloadavg()[0]
    return [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" load average {load_before:.1f} before, {load_after:.1f} after; dev server with its"
        f" defaults; renkei's linkages {LINKAGES[TRANSPORT[0]]}",
        "",
        *ba.report(results, flows, rounds),
        "",
        *ba.report_waiting(waited, flows, rounds),
    ]


async def citizen(quick: bool) -> None:
    from bench.citizen import run

    r = await run(quick)
    print(
        f"citizen endpoint, 1,000 of {r['total']:,.0f} records: median {r['p50_ms']:.1f} ms,"
        f" p95 {r['p95_ms']:.1f} ms  (target < 50 ms; loading took {r['load_s']:.0f} s)"
    )


async def waiting(quick: bool) -> list[str]:
    """N flows waiting at once against N plain workflows waiting for a signal
    (``bench/waiting.py``): 10,000, or 1,000 with ``--quick`` (the same shapes)."""
    from bench.waiting import CACHE, plain_waiting, renkei_waiting
    from whitelist.store import LiveWhitelist

    n = 1_000 if quick else 10_000
    load_before = os.getloadavg()[0]
    async with _stack(sample_residents=100) as (env, pool, settings, url):
        whitelist = await LiveWhitelist(
            url, sealed_by=keys.load(settings).signer().public_key()
        ).start()
        try:
            encrypted = await connect(settings, env.client.service_client.config.target_host)
            plain = await plain_waiting(env.client, settings, n)
            ours = await renkei_waiting(encrypted, pool, settings, whitelist, n)
        finally:
            await whitelist.stop()
    load_after = os.getloadavg()[0]
    out = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" {n:,} flows waiting at once{' (--quick: the full run has 10,000)' if quick else ''};"
        f" each side's worker in a fresh process of its own with a workflow cache of {CACHE:,}"
        f" runs; load average {load_before:.1f} before, {load_after:.1f} after",
        "",
        "| measure | renkei | plain Temporal | ratio (target) |",
        "| --- | --- | --- | --- |",
    ]
    for label, key, unit, target in (
        ("start all, until every one waits", "waiting_s", "s", "≤ 2"),
        ("resume all by signal, until every one completed", "resume_s", "s", "≤ 1.3"),
        ("worker process resident memory while waiting", "rss_mib", "MiB", "≤ 1.5"),
        ("of which grown since its worker started", "rss_growth_mib", "MiB", ""),
    ):
        ratio = ours[key] / plain[key]
        out.append(
            f"| {label} | {ours[key]:.1f} {unit} | {plain[key]:.1f} {unit}"
            f" | **{ratio:.2f}**{f' ({target})' if target else ''} |"
        )
    out.append(
        f"| renkei worker under 1,024 MiB resident | {'met' if ours['rss_mib'] < 1024 else 'NOT met'}"
        " | | |"
    )
    return out


def _rounds_machine(rounds: int, load_before: float, load_after: float) -> str:
    """The line a rounds bench's results begin with: the machine, the rounds, the load."""
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" median of {rounds} alternating rounds; load average {load_before:.1f} before,"
        f" {load_after:.1f} after"
    )


async def chain(quick: bool) -> list[str]:
    """Records chained inline against written unchained and chained behind (``bench/chain.py``)."""
    from bench import chain as bc
    from workers.plugin import connect

    load_before = os.getloadavg()[0]
    async with _stack(sample_residents=400) as (env, pool, settings, url):
        from bench import flows as bf

        await bf.register_sequential(pool)
        big = await create_pool(url, max_size=40)  # as many writers at once as a busy hub
        try:
            writes = await bc.record_rounds(big, settings, quick)
        finally:
            await big.close()
        encrypted = await connect(settings, env.client.service_client.config.target_host)
        flows = await bc.flow_rounds(env.client, encrypted, pool, settings, url, quick)
    load_after = os.getloadavg()[0]
    return [
        _rounds_machine(bc.ROUNDS, load_before, load_after),
        "",
        *bc.report(writes, flows),
    ]


async def chain_shape(quick: bool) -> list[str]:
    """The records on one chain in the production shape: its writers and its chainer each in
    processes of their own (``bench/chain.py``, :func:`bench.chain.process_rounds`)."""
    from bench import chain as bc

    load_before = os.getloadavg()[0]
    async with _stack(sample_residents=50) as (_env, _pool, settings, url):
        big = await create_pool(url, max_size=40)  # the one-process round's 128 writers
        try:
            rates = await bc.process_rounds(big, settings, quick)
        finally:
            await big.close()
    load_after = os.getloadavg()[0]
    return [
        _rounds_machine(bc.ROUNDS, load_before, load_after),
        "",
        *bc.process_report(rates),
    ]


def _record(which: str, quick: bool, lines: list[str]) -> None:
    """Append one run's results, with the command that reproduces them, to docs/benchmarks.md."""
    command = (
        "python -m bench"
        + (" --quick" if quick else "")
        + (" --server tuned" if SERVER_FLAGS else "")
        + (" --transport queue" if TRANSPORT[0] == "queue" else "")
        + (f" --queries {SHAPE_QUERIES[0]}" if SHAPE_QUERIES[0] != 3 else "")
        + ("" if which == "all" else f" {which}")
    )
    today = dt.date.today().isoformat()
    section = [
        "",
        f"## {today}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} — `{command}`",
        "",
        *lines,
        "",
    ]
    path = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(section))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument(
        "--record",
        action="store_true",
        help="append the results of flows, waiting, chain, chain-shape, gateway, shape or anatomy to"
        " docs/benchmarks.md",
    )
    parser.add_argument(
        "which",
        nargs="?",
        choices=[
            "all",
            "flows",
            "citizen",
            "waiting",
            "protocol",
            "gateway",
            "chain",
            "chain-shape",
            "shape",
            "anatomy",
        ],
        default="all",
        help="what to run",
    )
    parser.add_argument(
        "--server",
        choices=["default", "tuned"],
        default="default",
        help="the dev server's defaults, or its queues read without the 50 ms tick (both sides)",
    )
    parser.add_argument(
        "--transport",
        choices=["direct", "queue"],
        default="direct",
        help="renkei's linkages over the direct channel (the platform's default), or through"
        " the providers' queues",
    )
    parser.add_argument(
        "--queries",
        type=int,
        choices=[1, 3, 10],
        default=3,
        help="queries per flow in shape (bench-seq-1, -3 or -10)",
    )
    args = parser.parse_args()
    TRANSPORT[0] = args.transport
    if args.server == "tuned":
        SERVER_FLAGS[:] = server_tuning_flags()
    if args.which in ("all", "flows"):
        lines = asyncio.run(main(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("flows", args.quick, lines)
    if args.which in ("all", "citizen"):
        asyncio.run(citizen(args.quick))
    if args.which in ("all", "waiting"):
        lines = asyncio.run(waiting(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("waiting", args.quick, lines)
    if args.which in ("all", "chain"):
        lines = asyncio.run(chain(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("chain", args.quick, lines)
    if args.which in ("all", "chain-shape"):
        lines = asyncio.run(chain_shape(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("chain-shape", args.quick, lines)
    if args.which in ("all", "protocol"):
        from bench.protocol import protocol

        print("\n".join(asyncio.run(protocol(args.quick))))
    if args.which in ("all", "gateway"):
        lines = asyncio.run(gateway(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("gateway", args.quick, lines)
    if args.which in ("all", "shape"):
        from bench import shape as bs

        bs.QUERIES[0] = SHAPE_QUERIES[0] = args.queries
        lines = asyncio.run(shape(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("shape", args.quick, lines)
    if args.which in ("all", "anatomy"):
        lines = asyncio.run(anatomy(args.quick))
        print("\n".join(lines))
        if args.record:
            _record("anatomy", args.quick, lines)
