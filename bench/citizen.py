"""The citizen endpoint: one citizen with 1,000 records among 1,000,000 (``--quick``: 100,000).

Records are written as the hub writes them (hash-chained, under the hub's subject id) with
``COPY``, for 1,000 citizens in all; the bench then times ``GET /api/citizen/records`` over HTTP
against the served app, portal-code lookup included, and prints the median and 95th percentile.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from renkei.app.stack import start_postgres
from renkei.kernel import keys, records
from renkei.kernel.db import create_pool, migrate
from renkei.kernel.pseudonyms import PORTAL, Pseudonyms
from renkei.kernel.settings import Settings

ORGS = ("pref-tokyo", "city-minato", "city-shibuya", "kyokai-kenpo", "jps")
INFOS = ("resident-record", "local-tax", "medical-benefit", "pension-benefit")


def _rows(total: int, target: uuid.UUID, target_count: int, others: list[uuid.UUID]) -> list[tuple]:  # type: ignore[type-arg]
    rng = random.Random(7)
    start = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
    subjects = [target] * target_count + [
        others[i % len(others)] for i in range(total - target_count)
    ]
    rng.shuffle(subjects)
    prev = records.GENESIS
    out = []
    for seq, subject in enumerate(subjects, start=1):
        at = start + dt.timedelta(seconds=seq * 37)
        rec = records.AccessRecord(
            keeper=records.HUB,
            attempt_key=f"bench/{seq}/run/step",
            decided_at=at,
            requester=rng.choice(ORGS),
            provider=rng.choice(ORGS),
            task="child-allowance",
            info=rng.choice(INFOS),
            legal_reference="番号法別表第二 七十四項",
            whitelist_row=None,
            subject_code=str(subject),
            bpf="child-allowance-check",
            bpf_version=1,
            content_hash="sha256:bench",
            workflow_id=f"child-allowance-check/city-minato/bench-{seq}",
            run_id="run",
            step="tax",
            outcome="allowed",
            reason="bench",
            chain_seq=seq,
            prev_hash=prev,
            recorded_at=at,
        )
        rec = rec.model_copy(update={"record_hash": records.record_hash(rec)})
        prev = rec.record_hash or ""
        out.append(tuple(getattr(rec, c) for c in records.COLUMNS))
    return out


async def run(quick: bool) -> dict[str, float]:
    total = 100_000 if quick else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="renkei-bench-citizen-"))
    pg, url = start_postgres(tmp)
    settings = Settings(
        database_url=url, temporal_address="-", keys_file=tmp / "keys.json", web_port=_free_port()
    )
    await migrate(url)
    pool = await create_pool(url, max_size=4)
    try:
        hub = Pseudonyms(pool, keys.load(settings).hub_key)
        target = uuid.uuid4()
        others = [uuid.uuid4() for _ in range(999)]
        await hub.enroll([target, *others], [PORTAL])
        portal_code = await hub.code_at(PORTAL, target)
        t0 = time.perf_counter()
        rows = _rows(total, target, 1000, others)
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "access_records", schema_name="records", columns=records.COLUMNS, records=rows
            )
            await conn.execute("ANALYZE records.access_records")
        load_s = time.perf_counter() - t0
        latencies = await _time_requests(settings, pool, portal_code)
    finally:
        await pool.close()
        pg.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "total": total,
        "load_s": load_s,
        "p50_ms": statistics.median(latencies),
        "p95_ms": statistics.quantiles(latencies, n=20)[18],
    }


async def _time_requests(settings: Settings, pool: asyncpg.Pool, portal_code: str) -> list[float]:
    """Latencies in ms, measured by a client in its own process, as a citizen's browser is."""
    import asyncio
    import json
    import sys

    from renkei.app.web import serving

    async with serving(settings, pool) as base:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.citizen",
            f"{base}/api/citizen/records?limit=1000",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(portal_code.encode())
    if proc.returncode != 0:
        raise RuntimeError("the timing client failed")
    latencies: list[float] = json.loads(out)
    return latencies


def _client(url: str, portal_code: str, warmup: int = 5, runs: int = 50) -> list[float]:
    headers = {"Authorization": f"Bearer {portal_code}"}
    out = []
    with httpx.Client(headers=headers) as http:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            response = http.get(url)
            elapsed = (time.perf_counter() - t0) * 1000
            response.raise_for_status()
            if i >= warmup:
                out.append(elapsed)
        assert len(response.json()) == 1000
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


if __name__ == "__main__":  # the timing client: URL as argument, portal code on stdin
    import json
    import sys

    print(json.dumps(_client(sys.argv[1], sys.stdin.read().strip())))
