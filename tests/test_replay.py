"""Recorded histories of every sample BPF replay against the current interpreter.

A change to the interpreter (or to what it computes from a definition) that would make flows
already in flight take another path fails here, before it reaches a running system. See
``tests/histories/README.md`` for how the histories are recorded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from renkei.contracts.names import (
    DIRECT_LINKAGE,
    DIRECT_RESOLVE,
    control_parts,
    is_act_activity,
    is_query_activity,
)
from renkei.kernel.settings import Settings
from tests.paths import SAMPLES_DIR
from workers.plugin import replayer
from workflows.interpreter import BpfInterpreter

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(p for p in HISTORIES.glob("*/*.json") if p.parent.name != "keys")
# The fixture keys every history was recorded under: the hub's (``keys.json``, with the shared
# ring of the runs from before channels) and every sample org's (``keys/``); a key set of an
# earlier recording is kept as each party's former sealing keys.
FIXTURE_KEYS = Settings(keys_file=HISTORIES / "keys.json", keys_dir=HISTORIES / "keys")
# The prefix of the newest recording: every sample has runs recorded on the current paths.
NEWEST = "v{version}-unmarked-"
# The prefix of the newest runs recorded over the direct channel (`--transport direct`): the
# same paths as the newest, each linkage a local activity of the flow.
DIRECT = "v{version}-unmarked-direct-"


def _queue(recorded: dict[str, object]) -> str:
    history = recorded["history"]
    assert isinstance(history, dict)
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    name: str = started["taskQueue"]["name"]
    return name


def test_every_sample_has_runs_recorded_on_the_current_paths() -> None:
    """Of every shipped sample's version: runs on its executor's side recorded under the newest
    prefix (so the paths the code takes now are the ones replayed)."""
    from renkei.bpf.loader import definition_files, load_file

    for path in definition_files(SAMPLES_DIR):
        d = load_file(path).definition
        newest = NEWEST.format(version=d.version)
        found = [p for p in FILES if p.parent.name == d.bpf and p.name.startswith(newest)]
        assert found, f"{d.bpf} v{d.version} has no history recorded as {newest}…"
        for p in found:
            recorded = json.loads(p.read_text(encoding="utf-8"))
            queue = _queue(recorded)
            assert control_parts(queue)[1] is not None, f"{p.name}: not on an executor's queue"


# The prefix of the runs resolved at the hub's endpoint (recorded with RENKEI_HUB_TRANSPORT=direct).
RESOLVED = "v{version}-resolved-"
# Runs whose hub endpoint was out of reach when they started (recorded with its address one where
# nothing listens): each tried it, then asked ``hub.resolve`` on the hub's queue.
FALLEN_BACK = "-resolved-fallback-"


def test_every_sample_has_runs_recorded_as_resolved_at_the_hubs_endpoint() -> None:
    """Of every shipped sample's version: runs started to be resolved at the hub's endpoint
    (the paths 5), each that no other flow started resolved there, not on the hub's queue."""
    from renkei.bpf.loader import definition_files, load_file

    for path in definition_files(SAMPLES_DIR):
        d = load_file(path).definition
        prefix = RESOLVED.format(version=d.version)
        found = [
            p
            for p in FILES
            if p.parent.name == d.bpf and p.name.startswith(prefix) and FALLEN_BACK not in p.name
        ]
        assert found, f"{d.bpf} v{d.version} has no history recorded as {prefix}…"
        for p in found:
            recorded = json.loads(p.read_text(encoding="utf-8"))
            history = recorded["history"]
            assert isinstance(history, dict)
            started = history["events"][0]["workflowExecutionStartedEventAttributes"]
            if "parentWorkflowExecution" not in started:
                assert _resolved_at_the_hubs_endpoint(recorded), f"{p.name}: not resolved so"


def _resolved_at_the_hubs_endpoint(recorded: dict[str, object]) -> bool:
    """Whether a run (its first) was resolved at the hub's endpoint: a local activity's marker
    of ``renkei.direct-resolve``, and no ``hub.resolve`` on the hub's queue."""
    history = recorded["history"]
    assert isinstance(history, dict)
    queued = local = False
    for e in history["events"]:
        scheduled = e.get("activityTaskScheduledEventAttributes")
        if scheduled is not None and scheduled["activityType"]["name"] == "hub.resolve":
            queued = True
        marker = e.get("markerRecordedEventAttributes")
        if marker is not None and marker["markerName"] == "core_local_activity":
            [data] = marker["details"]["data"]["payloads"]
            seen = json.loads(base64.b64decode(data["data"]))
            local = local or seen["activity_type"] == DIRECT_RESOLVE
    return local and not queued


def test_runs_that_fell_back_to_the_hubs_queue_are_recorded() -> None:
    """Runs that asked the hub's endpoint in vain and then the hub's queue (the endpoint's
    outage: a failed ``renkei.direct-resolve`` marker, then ``hub.resolve`` on the hub's queue,
    its answer the run's resolution), so that a change of that path fails a replay too; some
    of them then asking their providers over the direct channel, as the hub told them."""
    found = [p for p in FILES if FALLEN_BACK in p.name]
    assert found, f"no history recorded as …{FALLEN_BACK}…"
    asked = 0
    for p in found:
        recorded = json.loads(p.read_text(encoding="utf-8"))
        history = recorded["history"]
        assert isinstance(history, dict)
        calls: list[tuple[str, bool]] = []  # (activity, whether it failed)
        for e in history["events"]:
            scheduled = e.get("activityTaskScheduledEventAttributes")
            if scheduled is not None and scheduled["activityType"]["name"] == "hub.resolve":
                calls.append(("queue", False))
            marker = e.get("markerRecordedEventAttributes")
            if marker is not None and marker["markerName"] == "core_local_activity":
                [data] = marker["details"]["data"]["payloads"]
                if json.loads(base64.b64decode(data["data"]))["activity_type"] == DIRECT_RESOLVE:
                    calls.append(("endpoint", "failure" in marker))
        assert calls[:2] == [("endpoint", True), ("queue", False)], f"{p.name}: {calls}"
        if "-resolved-fallback-direct-" in p.name:  # then over the direct channel, as told
            queued, _ = _linkages(recorded)
            assert not queued, f"{p.name}: linkages on the providers' queues: {queued}"
            asked += len(_linkages(recorded)[1])
    assert asked, "no run that fell back asked a provider over the direct channel"


def _linkages(recorded: dict[str, object]) -> tuple[list[str], list[str]]:
    """A run's linkages: (the activity types it scheduled on providers' queues, the steps it
    asked over the direct channel, from its local activities' markers)."""
    history = recorded["history"]
    assert isinstance(history, dict)
    queued: list[str] = []
    direct: list[str] = []
    for e in history["events"]:
        scheduled = e.get("activityTaskScheduledEventAttributes")
        if scheduled is not None:
            kind = scheduled["activityType"]["name"]
            if is_query_activity(kind) or is_act_activity(kind):
                queued.append(kind)
        marker = e.get("markerRecordedEventAttributes")
        if marker is not None and marker["markerName"] == "core_local_activity":
            [data] = marker["details"]["data"]["payloads"]
            seen = json.loads(base64.b64decode(data["data"]))
            if seen["activity_type"] == DIRECT_LINKAGE:
                direct.append(seen["activity_id"])
    return queued, direct


def test_every_sample_has_runs_recorded_over_the_direct_channel() -> None:
    """Of every shipped sample's version: runs recorded over the direct channel, each asking
    no provider on its queue, and with linkages asked directly (the flows in flight over the
    direct channel when the code changes)."""
    from renkei.bpf.loader import definition_files, load_file

    for path in definition_files(SAMPLES_DIR):
        d = load_file(path).definition
        prefix = DIRECT.format(version=d.version)
        found = [p for p in FILES if p.parent.name == d.bpf and p.name.startswith(prefix)]
        assert found, f"{d.bpf} v{d.version} has no history recorded as {prefix}…"
        asked = 0
        for p in found:
            recorded = json.loads(p.read_text(encoding="utf-8"))
            assert control_parts(_queue(recorded))[1] is not None, f"{p.name}: not an executor's"
            queued, direct = _linkages(recorded)
            assert not queued, f"{p.name}: linkages on the providers' queues: {queued}"
            asked += len(direct)
        assert asked, f"{d.bpf} v{d.version}: no linkage was asked over the direct channel"


def test_the_histories_cover_both_control_paths() -> None:
    """Runs from before executor-side control (the shared control queue, the hub's activities
    local) and runs on an executor's control queue (the hub's activities on the hub's queue)."""
    executors = {control_parts(_queue(json.loads(p.read_text(encoding="utf-8"))))[1] for p in FILES}
    assert None in executors and executors - {None}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_history_replays(path: Path) -> None:
    """Each run is replayed as the worker that ran it would replay it: a run on an executor's
    control queue by that executor's control worker, with the executor's keys alone, on a queue
    of the executor's (the replayer's task queue is ``replay-<build id>``: the hub's activities
    then run on the hub's queue, as they did); a run from before executor-side control by the
    shared control worker, which acts for every party of the recording. Always in the sandbox
    (:func:`workers.plugin.replayer`), whatever the workers run in: every recorded path of the
    interpreter is checked against calls that are not deterministic."""
    recorded = json.loads(path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - a small file
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    executor = control_parts(_queue(recorded))[1]
    if executor is not None:
        replay = replayer(
            FIXTURE_KEYS,
            [BpfInterpreter],
            parties=[executor],
            build_id=f"fixture.control.{executor}",
        )
    else:
        replay = replayer(FIXTURE_KEYS, [BpfInterpreter])
    result = await replay.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
