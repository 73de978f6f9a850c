"""The kit's report on a BPF version: its results, its verdict, and what is kept of it.

The report (JSON) names the kit's version, the BPF version and its content hash, and each
scenario's outcome, linkages and problems; it passes only if every scenario does. It is hashed
(the run's workflow ids left out); a passing report is stored with the version, and ``renkei bpf
submit`` requires one for exactly the version's content. The history of each scenario's run can
be written out for CI to replay against the current interpreter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import asyncpg
from pydantic import BaseModel
from temporalio.api.enums.v1 import ContinueAsNewInitiator
from temporalio.client import Client

from renkei.app.kit.scenarios import ExpectedLinkage

KIT_VERSION = "1"


class ScenarioResult(BaseModel):
    name: str
    passed: bool
    outcome: str
    linkages: list[ExpectedLinkage]
    problems: list[str]
    workflow_id: str


class Report(BaseModel):
    kit_version: str = KIT_VERSION
    bpf: str
    version: int
    content_hash: str
    passed: bool
    scenarios: list[ScenarioResult]

    def digest(self) -> str:
        body = self.model_dump(mode="json", exclude={"scenarios": {"__all__": {"workflow_id"}}})
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def summary(self) -> str:
        lines = [
            f"{self.bpf} v{self.version} ({self.content_hash[:19]}…): conformance kit {KIT_VERSION}"
        ]
        for s in self.scenarios:
            lines.append(f"  {'PASS' if s.passed else 'FAIL'}  {s.name}  → {s.outcome}")
            lines.extend(f"        {p}" for p in s.problems)
        passed = sum(s.passed for s in self.scenarios)
        lines.append(
            f"{passed}/{len(self.scenarios)} scenarios passed: {'PASSED' if self.passed else 'FAILED'}"
        )
        return "\n".join(lines)


async def store_report(pool: asyncpg.Pool, report: Report, run_by: str | None = None) -> str:
    """Keep the report with its version (and the party that ran the kit, when known); return
    its hash."""
    digest = report.digest()
    await pool.execute(
        "INSERT INTO registry.conformance_reports"
        " (bpf, version, content_hash, report_hash, passed, report, run_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        report.bpf,
        report.version,
        report.content_hash,
        digest,
        report.passed,
        report.model_dump(mode="json"),
        run_by,
    )
    return digest


async def record_histories(client: Client, report: Report, directory: Path) -> list[Path]:
    """Write the history of every scenario run of ``report`` under ``directory/<bpf>/``: the
    run the scenario ended in as ``v<version>-<scenario>.json``, and each run it continued as
    new from, the first first, as ``v<version>-<scenario>.run<k>.json``.

    CI replays them against the current interpreter (``tests/test_replay.py``): a change that
    would break flows already running fails there.
    """
    folder = directory / report.bpf
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for s in report.scenarios:
        runs = [await client.get_workflow_handle(s.workflow_id).fetch_history()]
        while True:  # back through the runs it continued as new from, each named by the next
            started = runs[0].events[0].workflow_execution_started_event_attributes
            before = started.continued_execution_run_id
            if (
                not before
                or started.initiator != ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW
            ):
                break  # its first run (or one a retry or a schedule started: not the flow's)
            handle = client.get_workflow_handle(s.workflow_id, run_id=before)
            runs.insert(0, await handle.fetch_history())
        slug = "".join(c if c.isalnum() else "-" for c in s.name.lower()).strip("-")[:60]
        for k, history in enumerate(runs, start=1):
            suffix = "" if k == len(runs) else f".run{k}"  # no scenario's name gives a dot
            path = folder / f"v{report.version}-{slug}{suffix}.json"
            path.write_text(
                json.dumps(
                    {"workflow_id": s.workflow_id, "history": json.loads(history.to_json())},
                    indent=1,
                ),
                encoding="utf-8",
            )
            written.append(path)
    return written
