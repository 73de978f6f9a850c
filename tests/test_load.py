"""Load: 200 flows started at once from four client processes.

Afterwards every flow has finished, every linkage has exactly one record with each party, and
every keeper's hash chain verifies. Run it alone with ``pytest -m load``.

Why 200: every worker takes 100 tasks at a time (the SDK's default slots; renkei sets none), so
200 flows of two linkages each put a backlog on every queue (the executor's 200 flows, the
hub's 400 permits and records, each provider's 200 answers) and keep the records' chains written
by many attempts at once, from four processes starting at the same moment: what "under load"
means for lost or doubled work. More flows only lengthen the same backlog (1,000 took five times
as long and proved nothing more); throughput is measured by ``python -m bench``, not here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from renkei.contracts.messages import FlowResult
from renkei.kernel import keys, records
from renkei.kernel.settings import Settings

from .helpers import allowance_check, workers
from .processes import ROOT, control_plane, renkei_env, served_here

pytestmark = pytest.mark.load

FLOWS = 200  # twice the slots of every worker: each queue has a backlog (see above)
CLIENTS = 4


async def test_200_concurrent_flows_from_four_client_processes(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog,
    live_whitelist,
    tmp_path: Path,
) -> None:
    settings = served_here(settings)  # the control processes ask the agencies served here
    starts = [allowance_check(settings, i) for i in range(FLOWS)]
    files = []
    for n in range(CLIENTS):
        f = tmp_path / f"client-{n}.jsonl"
        f.write_text("\n".join(s.model_dump_json() for s in starts[n::CLIENTS]))
        files.append(f)
    address = client.service_client.config.target_host
    env = renkei_env(settings, address)
    control = control_plane(settings, address)
    try:
        async with workers(client, pool, settings, catalog, live_whitelist, control=False):
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.load_client",
                    str(f),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for f in files
            ]
            outputs = await asyncio.gather(*(p.communicate() for p in procs))
            for p, (_, err) in zip(procs, outputs, strict=True):
                assert p.returncode == 0, err.decode()[-3000:]
            ids = [wid for out, _ in outputs for wid in json.loads(out)]
            assert len(set(ids)) == FLOWS
            results: list[FlowResult] = await asyncio.wait_for(
                asyncio.gather(
                    *(client.get_workflow_handle(w, result_type=FlowResult).result() for w in ids)
                ),
                600,
            )
    finally:
        for p in control:
            p.stop()
    assert {r.outcome for r in results} <= {"completed", "rejected"}
    assert all(len(r.linkages) == 2 for r in results)
    doubles = await pool.fetch(
        "SELECT workflow_id, keeper, step, count(*) FROM records.access_records"
        " WHERE workflow_id = ANY($1) GROUP BY 1, 2, 3 HAVING count(*) <> 1",
        ids,
    )
    assert not doubles
    total = await pool.fetchval(
        "SELECT count(*) FROM records.access_records WHERE workflow_id = ANY($1)", ids
    )
    assert total == FLOWS * 2 * 3  # two linkages, three parties each
    # The chains these flows wrote (other tests' probes of tampering keep chains of their own).
    kept = await pool.fetch(
        "SELECT DISTINCT keeper FROM records.access_records WHERE workflow_id = ANY($1)", ids
    )
    verified = await records.verify(
        pool, keys.load(settings).signer(), sorted(r["keeper"] for r in kept)
    )
    assert verified.ok, verified.breaks
