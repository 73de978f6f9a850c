"""BPMN 2.0 export: the step graph as a process plus diagram interchange.

Shapes and edges are at the layout's coordinates, so standard modelers open the file. Query
steps are service tasks with a text annotation (the info item, its provider, the legal
references), ``set`` steps script tasks, ``wait`` receive tasks, ``sleep`` timer events,
``call`` call activities, ``fail`` error end events, ``parallel`` parallel gateways and
``branch`` exclusive gateways with the CEL condition on each flow. renkei's own attributes
(``renkei:`` namespace) keep what BPMN has no place for, so
:func:`~renkei.bpf.render.bpmn_import.from_bpmn` reads the file back into the same steps.

Importing this module registers the namespace prefixes with ElementTree. Domain code: imports
no ``temporalio``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from renkei.bpf.models import ActStep, CallStep, QueryStep, SetStep, SleepStep, WaitStep
from renkei.bpf.render.graph import HGAP, NOTE_H, TASK_W, Graph, Node
from renkei.bpf.render.labels import partner_label, provider_label

BPMN = "http://www.omg.org/spec/BPMN/20100524/MODEL"
BPMNDI = "http://www.omg.org/spec/BPMN/20100524/DI"
DC = "http://www.omg.org/spec/DD/20100524/DC"
DI = "http://www.omg.org/spec/DD/20100524/DI"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
RENKEI = "urn:renkei:bpmn:1"
CEL = "https://github.com/google/cel-spec"
for _prefix, _uri in (
    ("bpmn", BPMN),
    ("bpmndi", BPMNDI),
    ("dc", DC),
    ("di", DI),
    ("xsi", XSI),
    ("renkei", RENKEI),
):
    ET.register_namespace(_prefix, _uri)


def qname(ns: str, tag: str) -> str:
    """An ElementTree qualified name.

    Args:
        ns: The namespace URI.
        tag: The local name.

    Returns:
        ``{ns}tag``.
    """
    return f"{{{ns}}}{tag}"


_TAGS = {
    "start": "startEvent",
    "end": "endEvent",
    "fail": "endEvent",
    "task": "serviceTask",
    "script": "scriptTask",
    "wait": "receiveTask",
    "sleep": "intermediateCatchEvent",
    "call": "callActivity",
    "act": "sendTask",
    "and-split": "parallelGateway",
    "and-join": "parallelGateway",
    "xor-split": "exclusiveGateway",
    "xor-join": "exclusiveGateway",
}


def to_bpmn(g: Graph) -> str:
    """The graph as BPMN 2.0 XML: the process, and its diagram at the graph's coordinates.

    Args:
        g: A graph from :func:`~renkei.bpf.render.graph.build`.

    Returns:
        The XML document; :func:`~renkei.bpf.render.bpmn_import.from_bpmn` reads it back.
    """
    d = g.definition
    root = ET.Element(
        qname(BPMN, "definitions"),
        {
            "id": f"Definitions_{_ncname(d.bpf)}",
            "targetNamespace": "urn:renkei:bpf",
            "exporter": "renkei",
            "exporterVersion": "1",
        },
    )
    errors = {n.id: f"Error_{n.id}" for n in g.nodes.values() if n.kind == "fail"}
    for node_id, error_id in errors.items():
        ET.SubElement(root, qname(BPMN, "error"), {"id": error_id, "name": g.nodes[node_id].label})
    process = ET.SubElement(
        root,
        qname(BPMN, "process"),
        {
            "id": f"Process_{_ncname(d.bpf)}",
            "name": d.title.ja if hasattr(d.title, "ja") else str(d.title),
            # renkei executes it (the interpreter runs the BPF); engines such as SpiffWorkflow
            # load only processes marked executable.
            "isExecutable": "true",
            qname(RENKEI, "bpf"): d.bpf,
            qname(RENKEI, "version"): str(d.version),
            qname(RENKEI, "task"): d.task,
            qname(RENKEI, "definer"): d.owners.definer,
            qname(RENKEI, "executors"): " ".join(d.owners.executors),
            qname(RENKEI, "header"): json.dumps(
                d.model_dump(
                    mode="json",
                    by_alias=True,
                    exclude={"steps", "bpf", "version", "task", "owners"},
                ),
                ensure_ascii=False,
                sort_keys=True,
            ),
        },
    )
    incoming: dict[str, list[str]] = {}
    outgoing: dict[str, list[str]] = {}
    for e in g.edges:
        outgoing.setdefault(e.source, []).append(e.id)
        incoming.setdefault(e.target, []).append(e.id)
    notes: list[tuple[Node, str]] = []
    for n in g.nodes.values():
        attrs: dict[str, str] = {"id": _ncname(n.id), "name": n.label.replace("\n", " — ")}
        s = n.step
        if isinstance(s, QueryStep):
            attrs[qname(RENKEI, "info")] = s.query.info
            attrs[qname(RENKEI, "provider")] = s.query.provider
            if s.query.about is not None:
                attrs[qname(RENKEI, "about")] = s.query.about
            extra = s.query.model_dump(
                mode="json", exclude={"info", "provider", "about"}, exclude_defaults=True
            )
            if extra:
                attrs[qname(RENKEI, "spec")] = json.dumps(extra, sort_keys=True)
        elif isinstance(s, SetStep):
            attrs[qname(RENKEI, "set")] = json.dumps(s.set, ensure_ascii=False)
        elif isinstance(s, WaitStep | SleepStep | CallStep | ActStep):
            spec = getattr(s, s.kind)
            attrs[qname(RENKEI, "spec")] = json.dumps(
                spec.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                ensure_ascii=False,
                sort_keys=True,
            )
            if isinstance(s, CallStep):
                attrs["calledElement"] = f"Process_{_ncname(s.call.bpf)}"
        if n.kind == "xor-split":
            default = next((e for e in g.edges if e.source == n.id and e.default), None)
            if default is not None:
                attrs["default"] = default.id
        el = ET.SubElement(process, qname(BPMN, _TAGS[n.kind]), attrs)
        for flow in incoming.get(n.id, []):
            ET.SubElement(el, qname(BPMN, "incoming")).text = flow
        for flow in outgoing.get(n.id, []):
            ET.SubElement(el, qname(BPMN, "outgoing")).text = flow
        if n.kind == "fail":
            ET.SubElement(el, qname(BPMN, "errorEventDefinition"), {"errorRef": errors[n.id]})
        if n.kind == "sleep":
            timer = ET.SubElement(el, qname(BPMN, "timerEventDefinition"), {"id": f"Timer_{n.id}"})
            if isinstance(s, SleepStep) and s.sleep.for_ is not None:
                duration = ET.SubElement(
                    timer,
                    qname(BPMN, "timeDuration"),
                    {qname(XSI, "type"): "bpmn:tFormalExpression"},
                )
                duration.text = f"PT{int(s.sleep.for_.total_seconds())}S"
            elif isinstance(s, SleepStep) and s.sleep.until is not None:
                # the moment, as the CEL expression that computes it when the flow gets there
                moment = ET.SubElement(
                    timer,
                    qname(BPMN, "timeDate"),
                    {qname(XSI, "type"): "bpmn:tFormalExpression", "language": CEL},
                )
                moment.text = s.sleep.until
        if n.kind == "script" and isinstance(s, SetStep):
            attrs_script = el
            attrs_script.set("scriptFormat", CEL)
            ET.SubElement(el, qname(BPMN, "script")).text = "\n".join(
                f"{k} = {v}" for k, v in s.set.items()
            )
        if n.kind == "task" and isinstance(s, QueryStep):
            text = f"{s.query.info} ← {provider_label(d, s)}\n" + (
                "\n".join(n.legal) if n.legal else "no whitelist row found"
            )
            notes.append((n, text))
        if n.kind == "act" and isinstance(s, ActStep):
            text = f"{s.act.action} → {partner_label(s)}\n" + (
                "\n".join(n.legal) if n.legal else "no partner row found"
            )
            notes.append((n, text))
    for e in g.edges:
        attrs = {"id": e.id, "sourceRef": _ncname(e.source), "targetRef": _ncname(e.target)}
        if e.condition:
            attrs["name"] = e.condition
        sequence_flow = ET.SubElement(process, qname(BPMN, "sequenceFlow"), attrs)
        if e.condition:
            cond = ET.SubElement(
                sequence_flow,
                qname(BPMN, "conditionExpression"),
                {qname(XSI, "type"): "bpmn:tFormalExpression", "language": CEL},
            )
            cond.text = e.condition
    for n, text in notes:
        note = ET.SubElement(process, qname(BPMN, "textAnnotation"), {"id": f"Note_{n.id}"})
        ET.SubElement(note, qname(BPMN, "text")).text = text
        ET.SubElement(
            process,
            qname(BPMN, "association"),
            {"id": f"Assoc_{n.id}", "sourceRef": n.id, "targetRef": f"Note_{n.id}"},
        )

    diagram = ET.SubElement(root, qname(BPMNDI, "BPMNDiagram"), {"id": "Diagram_1"})
    plane = ET.SubElement(
        diagram, qname(BPMNDI, "BPMNPlane"), {"id": "Plane_1", "bpmnElement": process.get("id", "")}
    )

    def bounds(parent: ET.Element, x: float, y: float, w: float, h: float) -> None:
        ET.SubElement(
            parent,
            qname(DC, "Bounds"),
            {"x": f"{x:.0f}", "y": f"{y:.0f}", "width": f"{w:.0f}", "height": f"{h:.0f}"},
        )

    for n in g.nodes.values():
        shape = ET.SubElement(
            plane, qname(BPMNDI, "BPMNShape"), {"id": f"{n.id}_di", "bpmnElement": _ncname(n.id)}
        )
        bounds(shape, n.x, n.y, n.w, n.h)
    for n, _ in notes:
        shape = ET.SubElement(
            plane,
            qname(BPMNDI, "BPMNShape"),
            {"id": f"Note_{n.id}_di", "bpmnElement": f"Note_{n.id}"},
        )
        bounds(shape, n.x, n.y - NOTE_H, TASK_W + 20, NOTE_H - 10)
    for e in g.edges:
        edge = ET.SubElement(
            plane, qname(BPMNDI, "BPMNEdge"), {"id": f"{e.id}_di", "bpmnElement": e.id}
        )
        for px, py in _waypoints(g.nodes[e.source], g.nodes[e.target]):
            ET.SubElement(edge, qname(DI, "waypoint"), {"x": f"{px:.0f}", "y": f"{py:.0f}"})
    for n, _ in notes:
        edge = ET.SubElement(
            plane,
            qname(BPMNDI, "BPMNEdge"),
            {"id": f"Assoc_{n.id}_di", "bpmnElement": f"Assoc_{n.id}"},
        )
        for px, py in ((n.x + TASK_W / 2, n.y), (n.x + TASK_W / 2, n.y - 10)):
            ET.SubElement(edge, qname(DI, "waypoint"), {"x": f"{px:.0f}", "y": f"{py:.0f}"})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _waypoints(a: Node, b: Node) -> list[tuple[float, float]]:
    sx, sy = a.x + a.w, a.y + a.h / 2
    tx, ty = b.x, b.y + b.h / 2
    if abs(sy - ty) < 1:
        return [(sx, sy), (tx, ty)]
    mx = tx - HGAP / 2
    return [(sx, sy), (mx, sy), (mx, ty), (tx, ty)]


def _ncname(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s if re.match(r"[A-Za-z_]", s) else f"_{s}")
