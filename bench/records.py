"""Access-record writes per second, sustained, durable (synchronous commit), hash-chained.

Three shapes: one record per transaction on the hub's chain from 8 concurrent writers (what
linkages do one by one), batches of 100 on that one chain, and batches of 100 on 8 keepers'
chains at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import asyncpg

from renkei.kernel import records


def _record(keeper: str, i: int) -> records.AccessRecord:
    return records.AccessRecord(
        keeper=keeper,
        attempt_key=f"bench/{uuid.uuid4().hex}/{i}",
        decided_at=dt.datetime.now(dt.UTC),
        requester="pref-tokyo",
        provider="city-minato",
        task="child-rearing-allowance",
        info="local-tax",
        legal_reference="番号法別表第二 五十七項",
        whitelist_row="annex2/57/local-tax",
        subject_code="B" * 43,
        bpf="bench-seq-1",
        bpf_version=1,
        content_hash="sha256:" + "0" * 64,
        workflow_id=f"bench-seq-1/pref-tokyo/bench-{i}",
        run_id=str(uuid.uuid4()),
        step="q1",
        outcome="allowed",
        reason="permitted by 番号法別表第二 五十七項",
    )


async def _writers(pool: asyncpg.Pool, keepers: list[str], batch: int, total: int) -> float:
    """Records per second for ``total`` records written by one writer per keeper entry."""
    per_writer = total // len(keepers)

    async def writer(keeper: str) -> None:
        for start in range(0, per_writer, batch):
            await records.write(pool, *(_record(keeper, start + j) for j in range(batch)))

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in keepers))
    return per_writer * len(keepers) / (time.perf_counter() - t0)


async def run(pool: asyncpg.Pool, quick: bool) -> dict[str, float]:
    total = 4_000 if quick else 40_000
    return {
        "one per transaction, 8 writers, one chain": await _writers(
            pool, ["bench-hub"] * 8, 1, total // 4
        ),
        "batches of 100, one chain": await _writers(pool, ["bench-hub"], 100, total),
        "batches of 100, 8 chains at once": await _writers(
            pool, [f"bench-keeper-{k}" for k in range(8)], 100, total
        ),
    }
