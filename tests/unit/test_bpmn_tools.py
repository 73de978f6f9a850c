"""The exported BPMN loads in a BPMN engine's parser (SpiffWorkflow), not only in modelers.

SpiffWorkflow's parser validates each file against the BPMN 2.0 XSD and builds a spec of every
executable process; a process marked not executable is skipped, and a file whose timer has no
time is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from SpiffWorkflow.bpmn.parser import BpmnParser, BpmnValidator

from renkei.bpf.loader import definition_files, load_file
from renkei.bpf.models import CallStep, walk
from renkei.bpf.render import build, to_bpmn
from tests.paths import PROJECT_ROOT, SAMPLES_DIR

SAMPLES = definition_files(SAMPLES_DIR) + definition_files(SAMPLES_DIR / "nonconformant")
# the test fixtures with the step kinds no sample uses: sleeps (for and until), a call
FIXTURES = [
    PROJECT_ROOT / "tests" / "definitions" / n for n in ("sleep-probe.yaml", "one-stop-probe.yaml")
]
BY_ID = {load_file(p).definition.bpf: p for p in SAMPLES}


def _parser(*paths: Path) -> BpmnParser:
    parser = BpmnParser(validator=BpmnValidator())
    for path in paths:
        xml = to_bpmn(build(load_file(path).definition))
        parser.add_bpmn_xml(etree.fromstring(xml.encode()), filename=f"{path.stem}.bpmn")
    return parser


def test_every_sample_is_found() -> None:
    assert len(SAMPLES) >= 7


@pytest.mark.parametrize("path", SAMPLES + FIXTURES, ids=lambda p: p.stem)
def test_the_export_parses_into_an_engine_spec(path: Path) -> None:
    d = load_file(path).definition
    parser = _parser(path)
    assert parser.get_process_ids() == [f"Process_{d.bpf}"]
    spec = parser.get_spec(f"Process_{d.bpf}")
    # every node of the diagram (each step, gateway and event) is a task of the spec
    assert set(build(d).nodes) <= set(spec.task_specs)


def test_a_call_resolves_to_the_called_flows_export() -> None:
    path = FIXTURES[1]
    d = load_file(path).definition
    [call] = [s for s in walk(list(d.steps)) if isinstance(s, CallStep)]
    parser = _parser(path, BY_ID[call.call.bpf])
    subprocesses = parser.get_subprocess_specs(f"Process_{d.bpf}")
    assert f"Process_{call.call.bpf}" in subprocesses
