"""Recorded histories of every sample BPF replay against the current interpreter.

A change to the interpreter (or to what it computes from a definition) that would make flows
already in flight take another path fails here, before it reaches a running system. See
``tests/histories/README.md`` for how the histories are recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.common import HeaderCodecBehavior
from temporalio.worker import Replayer

from renkei.contracts.names import executor_of
from renkei.kernel.settings import Settings
from tests.paths import SAMPLES_DIR
from workers.plugin import renkei_plugin
from workflows.interpreter import BpfInterpreter

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(p for p in HISTORIES.glob("*/*.json") if p.parent.name != "keys")
# The fixture keys the histories were recorded under: the hub's (with the shared ring of the
# runs from before channels) and every sample org's (``keys/``: runs sealed per channel).
FIXTURE_KEYS = Settings(keys_file=HISTORIES / "keys.json", keys_dir=HISTORIES / "keys")
# The plugin every worker runs with, acting for every party of the recordings at once.
REPLAY_PLUGIN = renkei_plugin(FIXTURE_KEYS, interceptors=[])


def test_every_sample_bpf_has_recorded_histories() -> None:
    """Of every sample: runs from before channels (shared ring, local hub activities), and runs
    on the executor's side (sealed per channel, the hub's activities on its own queue)."""
    shipped = {p.stem for p in (SAMPLES_DIR / "conformance").glob("*.yaml")}
    assert shipped <= {p.parent.name for p in FILES}
    assert shipped <= {p.parent.name for p in FILES if "-channels-" in p.name}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_history_replays(path: Path) -> None:
    recorded = json.loads(path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - a small file
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(
        workflows=[BpfInterpreter],
        plugins=[REPLAY_PLUGIN],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


# Runs on the executor's side (each executor's control queue, the hub's activities on the hub's
# queue, payloads sealed per channel), recorded with fixture keys of their own: replayed by the
# executor's control worker, with the executor's keys alone.
EXECUTOR_SIDE = HISTORIES / "executor-side"
EXECUTOR_SIDE_FILES = sorted(EXECUTOR_SIDE.glob("*/v*.json"))


def test_there_are_executor_side_histories() -> None:
    assert len(EXECUTOR_SIDE_FILES) >= 5


@pytest.mark.parametrize(
    "path", EXECUTOR_SIDE_FILES, ids=lambda p: f"executor-side/{p.parent.name}/{p.stem}"
)
async def test_executor_side_history_replays(path: Path) -> None:
    recorded = json.loads(path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - a small file
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    executor = executor_of(recorded["workflow_id"])
    assert executor is not None
    settings = Settings(keys_file=EXECUTOR_SIDE / "keys" / "keys.json")
    replayer = Replayer(
        workflows=[BpfInterpreter],
        plugins=[renkei_plugin(settings, parties=[executor], interceptors=[])],
        header_codec_behavior=HeaderCodecBehavior.CODEC,
        # The replayer's task queue is ``replay-<build id>``: a control queue of the executor's
        # (the hub's activities then run on the hub's queue, as they did in the run).
        build_id=f"fixture.control.{executor}",
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
