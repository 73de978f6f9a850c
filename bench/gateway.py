"""What ``renkei gateway`` costs: the same 3-query flow, its parties' workers connected straight
to the dev server, and connected through the gateway with each party's own certificate.

Both worker sets run in this process, each on a task-queue prefix of its own: the hub's worker,
Tokyo's control worker (the executor of ``bench-seq-3``) and Minato's agency worker (the
provider). The gateway runs as its own process (``renkei gateway``), as deployed; its CPU is
measured apart. Rounds alternate direct and through the gateway.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psutil
from temporalio.client import Client
from temporalio.worker import Worker

from bench import flows as bf
from renkei.app.client import RenkeiClient
from renkei.app.gateway import party_settings
from renkei.kernel import keys, tls
from renkei.kernel.settings import Settings
from whitelist.catalog import default_catalog
from whitelist.store import LiveWhitelist
from workers.agency import agency_worker
from workers.control import control_worker, hub_collector, hub_worker
from workers.plugin import attach_registry, connect

ROOT = Path(__file__).resolve().parent.parent
EXECUTOR, PROVIDER = "pref-tokyo", "city-minato"
ROUNDS = 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _gateway_process(
    upstream: str, folder: Path, url: str, hub_public: Path
) -> Iterator[tuple[str, psutil.Process]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENKEI_")}
    env.update(
        RENKEI_TEMPORAL_ADDRESS=upstream,
        RENKEI_GATEWAY_LISTEN=f"127.0.0.1:{port}",
        RENKEI_TEMPORAL_TLS_CA=str(tls.ca_paths(folder)[0]),
        RENKEI_GATEWAY_CERT=str(tls.party_paths(folder, tls.GATEWAY)[0]),
        RENKEI_GATEWAY_KEY=str(tls.party_paths(folder, tls.GATEWAY)[1]),
        RENKEI_DATA_DIR=str(folder),
        RENKEI_DATABASE_URL=url,  # it reads the hub's revocations of certificates
        RENKEI_GATEWAY_HUB_PUBLIC=str(hub_public),
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "renkei.app.cli", "gateway"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    up = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "gateway listening" in line:
                up.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not up.wait(60):
            raise RuntimeError("renkei gateway did not start")
        yield f"localhost:{port}", psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(20)


def _as(settings: Settings, folder: Path | None, party: str) -> Settings:
    return settings if folder is None else party_settings(settings, folder, party)


@contextlib.asynccontextmanager
async def _parties(
    address: str,
    settings: Settings,
    folder: Path | None,
    pool: asyncpg.Pool,
    whitelist: LiveWhitelist,
) -> AsyncIterator[RenkeiClient]:
    """The three parties' workers, each on its own connection (its own certificate through the
    gateway); yields the executor's SDK."""
    catalog = whitelist.bind(default_catalog())
    clients: dict[str, Client] = {}
    for party in ("hub", EXECUTOR, PROVIDER):
        clients[party] = await connect(_as(settings, folder, party), address, parties=[party])
        attach_registry(clients[party], pool, settings)
    workers: list[Worker] = [
        hub_worker(clients["hub"], pool, settings, catalog, whitelist),
        control_worker(clients[EXECUTOR], settings, EXECUTOR),
        agency_worker(clients[PROVIDER], pool, settings, catalog, PROVIDER, whitelist),
    ]
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(hub_collector(pool, settings))
        for w in workers:
            await stack.enter_async_context(w)
        yield RenkeiClient(clients[EXECUTOR], settings)


async def run(
    upstream: str, pool: asyncpg.Pool, settings: Settings, url: str, quick: bool
) -> list[str]:
    flows = 30 if quick else 200
    serial = 20 if quick else 100
    folder = Path(tempfile.mkdtemp(prefix="renkei-bench-tls-"))
    tls.make_ca(folder)
    for party in ("hub", EXECUTOR, PROVIDER):
        tls.issue(folder, party)
    tls.issue(folder, tls.GATEWAY, server_names=["localhost"])
    hub_public = folder / "hub-public.json"
    hub_public.write_text(keys.load(settings).public("hub").model_dump_json())
    direct_settings = settings.model_copy(update={"task_queue_prefix": f"d{uuid.uuid4().hex[:8]}"})
    gw_settings = settings.model_copy(update={"task_queue_prefix": f"g{uuid.uuid4().hex[:8]}"})
    whitelist = await LiveWhitelist(
        url, sealed_by=keys.load(settings).signer().public_key()
    ).start()
    try:
        with _gateway_process(upstream, folder, url, hub_public) as (address, gateway):
            async with (
                _parties(upstream, direct_settings, None, pool, whitelist) as direct,
                _parties(address, gw_settings, folder, pool, whitelist) as through,
            ):
                await bf.renkei(direct, direct_settings, 3, 5, 0)  # warm up both paths
                await bf.renkei(through, gw_settings, 3, 5, 0)
                rates: tuple[list[float], list[float]] = ([], [])
                cpu_before = gateway.cpu_times()
                t0 = time.perf_counter()
                for _ in range(ROUNDS):
                    rates[0].append(
                        (await bf.renkei(direct, direct_settings, 3, flows, 0)).flows_per_s
                    )
                    rates[1].append(
                        (await bf.renkei(through, gw_settings, 3, flows, 0)).flows_per_s
                    )
                cpu_after = gateway.cpu_times()
                wall = time.perf_counter() - t0
                lat_direct = await bf.renkei(direct, direct_settings, 3, 0, serial)
                lat_gw = await bf.renkei(through, gw_settings, 3, 0, serial)
    finally:
        await whitelist.stop()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    direct_rate, gw_rate = statistics.median(rates[0]), statistics.median(rates[1])
    return [
        f"3-query flows (`bench-seq-3`: Tokyo asks Minato three times), {flows} at once per round"
        f" (median of {ROUNDS} rounds, alternating), then {serial} one by one; the hub's, Tokyo's"
        " and Minato's workers each on its own connection (through the gateway: its own"
        " certificate); load average {:.1f}".format(os.getloadavg()[0]),
        "",
        "| 3-query flow | direct | through `renkei gateway` | ratio |",
        "| --- | --- | --- | --- |",
        f"| flows/s | {direct_rate:.1f} | {gw_rate:.1f} | **{gw_rate / direct_rate:.2f}** |",
        f"| start-to-result p50 | {lat_direct.pct(50):.1f} ms | {lat_gw.pct(50):.1f} ms"
        f" | {lat_gw.pct(50) / lat_direct.pct(50):.2f} |",
        f"| start-to-result p99 | {lat_direct.pct(99):.1f} ms | {lat_gw.pct(99):.1f} ms"
        f" | {lat_gw.pct(99) / lat_direct.pct(99):.2f} |",
        f"| gateway process CPU | | {cpu / (ROUNDS * flows) * 1000:.1f} ms per flow"
        f" ({cpu / wall:.0%} of a core over both paths' rounds) | |",
    ]
