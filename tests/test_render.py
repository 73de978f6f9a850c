"""Diagrams of every sample BPF: Mermaid, SVG, BPMN 2.0 (valid, and read back), the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from renkei.bpf.loader import definition_files, load_file
from renkei.bpf.models import BpfDefinition, QueryStep, walk
from renkei.bpf.render import BpmnImportError, build, from_bpmn, to_bpmn, to_mermaid, to_svg
from tests.paths import PROJECT_ROOT, SAMPLES_DIR
from whitelist.catalog import default_catalog
from whitelist.decide import WhitelistIndex
from whitelist.local import all_rows

SAMPLES = definition_files(SAMPLES_DIR)
# and the test fixtures that use every other step kind (sleep, call)
ALL_KINDS = SAMPLES + [
    PROJECT_ROOT / "tests" / "definitions" / n for n in ("sleep-probe.yaml", "one-stop-probe.yaml")
]
CATALOG = default_catalog()
INDEX = WhitelistIndex(all_rows(CATALOG))


def _needs_dot() -> None:
    import os
    import shutil

    if shutil.which("dot") is None:
        if os.environ.get("CI"):
            pytest.fail("Graphviz is not installed (apt-get install graphviz)")
        pytest.skip("Graphviz is not installed (apt-get install graphviz)")


def _bpmn_schema() -> etree.XMLSchema:
    import SpiffWorkflow

    xsd = Path(SpiffWorkflow.__file__).parent / "bpmn" / "parser" / "schema" / "BPMN20.xsd"
    return etree.XMLSchema(etree.parse(str(xsd)))


@pytest.fixture(scope="module")
def bpmn_xsd() -> etree.XMLSchema:
    return _bpmn_schema()


@pytest.mark.parametrize("path", ALL_KINDS, ids=lambda p: p.stem)
def test_bpmn_export_validates_and_round_trips(path: Path, bpmn_xsd: etree.XMLSchema) -> None:
    d = load_file(path).definition
    g = build(d, CATALOG, INDEX)
    xml = to_bpmn(g)
    doc = etree.fromstring(xml.encode())
    assert bpmn_xsd.validate(doc), bpmn_xsd.error_log
    # every flow node has a shape, every flow an edge: a modeler can draw it
    ns = {
        "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
        "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
    }
    nodes = {
        e.get("id")
        for e in doc.find("bpmn:process", ns)
        if not e.tag.endswith("sequenceFlow") and not e.tag.endswith("association")
    }
    shapes = {s.get("bpmnElement") for s in doc.iterfind(".//bpmndi:BPMNShape", ns)}
    assert nodes <= shapes
    # each query is a service task annotated with provider, info item and legal reference
    queries = [s for s in walk(list(d.steps)) if isinstance(s, QueryStep)]
    tasks = doc.findall("bpmn:process/bpmn:serviceTask", ns)
    assert sorted(t.get("id") for t in tasks) == sorted(q.id for q in queries)
    notes = " ".join(t.text or "" for t in doc.iterfind(".//bpmn:textAnnotation/bpmn:text", ns))
    assert all(q.query.info in notes for q in queries)
    # the citation: of the Act, or of a municipality's own ordinance (番号法第9条第2項)
    cited = "番号法" in notes or "条例" in notes
    assert cited or not any(g.nodes[q.id].legal for q in queries)
    assert BpfDefinition.model_validate(from_bpmn(xml)) == d


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_mermaid_and_svg_show_every_step_and_its_legal_basis(path: Path) -> None:
    _needs_dot()
    d = load_file(path).definition
    g = build(d, CATALOG, INDEX)
    mermaid = to_mermaid(g)
    svg = to_svg(g)
    assert mermaid.startswith("flowchart LR\n")
    assert "<svg" in svg
    for s in walk(list(d.steps)):
        assert s.id in mermaid and s.id in svg
        if isinstance(s, QueryStep):
            assert g.nodes[s.id].legal, f"{s.id} has no legal reference"
            for ref in g.nodes[s.id].legal:
                assert ref in mermaid and ref in svg


def test_import_names_what_it_cannot_read() -> None:
    xml = to_bpmn(build(load_file(SAMPLES[0]).definition))
    broken = xml.replace("bpmn:serviceTask", "bpmn:userTask")
    with pytest.raises(BpmnImportError, match="does not read bpmn:userTask"):
        from_bpmn(broken)
    with pytest.raises(BpmnImportError, match="not XML"):
        from_bpmn("<definitions")


def test_the_exported_json_schema_accepts_the_samples_and_rejects_a_typo(cli) -> None:
    import jsonschema
    from ruamel.yaml import YAML

    from .helpers import run

    code, out = run(cli, "bpf", "schema")
    assert code == 0
    schema = json.loads(out)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SAMPLES:
        doc = json.loads(json.dumps(YAML(typ="safe").load(path.read_text()), default=str))
        assert not list(validator.iter_errors(doc)), path
    doc["stepz"] = doc.pop("steps")
    assert list(validator.iter_errors(doc))


def test_render_command_writes_each_format(cli, tmp_path: Path) -> None:
    from .helpers import run

    _needs_dot()
    source = str(SAMPLES_DIR / "child-allowance.yaml")
    for fmt, marker in (("mermaid", "flowchart LR"), ("svg", "<svg"), ("bpmn", "bpmn:definitions")):
        out = tmp_path / f"d.{fmt}"
        code, text = run(cli, "bpf", "render", source, "--format", fmt, "--out", str(out))
        assert code == 0, text
        assert marker in out.read_text()
    bpmn = tmp_path / "d.bpmn"
    code, text = run(cli, "bpf", "import", str(bpmn))
    assert code == 0 and "bpf: child-allowance-check" in text and "parallel:" in text


def test_an_act_is_drawn_as_a_send_task_with_its_partner_row() -> None:
    """The partner step of the sample: a BPMN send task (valid, read back), the partner, the
    action and its legal basis (consent) in the note, Mermaid's and Graphviz's shape for it."""
    _needs_dot()
    d = load_file(SAMPLES_DIR / "move-notice-electricity.yaml").definition
    g = build(d, CATALOG, INDEX)
    node = g.nodes["notify"]
    assert node.kind == "act" and "sample-denki" in node.label
    assert node.legal == ["個人情報保護法第69条第2項第1号（本人の同意） (本人同意 / consent)"]
    xml = to_bpmn(g)
    doc = etree.fromstring(xml.encode())
    assert _bpmn_schema().validate(doc)
    ns = {"bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL"}
    (task,) = doc.findall("bpmn:process/bpmn:sendTask", ns)
    assert task.get("id") == "notify"
    notes = " ".join(t.text or "" for t in doc.iterfind(".//bpmn:textAnnotation/bpmn:text", ns))
    assert "electricity-move-notice → sample-denki" in notes and "第69条" in notes
    assert BpfDefinition.model_validate(from_bpmn(xml)) == d
    assert '  notify[/"notify<br/>electricity-move-notice → sample-denki' in to_mermaid(g)
    svg = to_svg(g)  # Graphviz laid it out (dot parsed what we gave it)
    assert "electricity&#45;move&#45;notice" in svg and "第69条" in svg


def test_a_wait_for_the_citizen_says_so_in_the_diagram() -> None:
    """The portal sample's consent is the citizen's own (`by: citizen`): its node says who
    answers, in Mermaid and in BPMN, which still reads back to the same definition."""
    d = load_file(SAMPLES_DIR / "child-allowance-portal.yaml").definition
    g = build(d, CATALOG, INDEX)
    assert g.nodes["consent"].label == "consent\nwait for preview-consent by the citizen (≤ 30d)"
    assert "wait for preview-consent by the citizen" in to_mermaid(g)
    xml = to_bpmn(g)
    assert "wait for preview-consent by the citizen" in xml
    assert BpfDefinition.model_validate(from_bpmn(xml)) == d
