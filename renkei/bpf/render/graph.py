"""Drawing a BPF so people can foresee how their data will be used: Mermaid, SVG, BPMN 2.0.

One graph is built from the definition (start, a task per query or set step, gateways for
``parallel`` and ``branch``, an error end event per ``fail``, the end) and laid out left to
right: a BPF is a series-parallel graph, so the layout is exact and needs no search. Each query
carries the info item, the provider (or the input naming it) and the legal references under
which the whitelist permits it.

- Mermaid: flowchart text.
- SVG: Graphviz (``dot``) from the same graph; nothing is fetched at run time.
- BPMN 2.0: process plus diagram interchange (shapes and edges at the layout's coordinates), so
  standard modelers open it; query steps are service tasks with a text annotation, ``set``
  steps script tasks, ``parallel`` parallel gateways, ``branch`` exclusive gateways with the CEL
  condition on each flow. renkei's own attributes (``renkei:`` namespace) keep what BPMN has no
  place for, so :func:`from_bpmn` reads the file back into the same steps.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from renkei.bpf.expressions import embedded
from renkei.bpf.models import (
    AnyStep,
    BpfDefinition,
    BranchStep,
    CallStep,
    FailStep,
    OtherwiseArm,
    ParallelStep,
    QueryStep,
    SetStep,
    SleepStep,
    WaitStep,
    WhenArm,
)
from whitelist.decide import WhitelistIndex
from whitelist.models import Catalog

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

TASK_W, TASK_H, NOTE_H = 140, 80, 70
GW, EV, HGAP, VGAP = 50, 36, 50, 40


@dataclass
class Node:
    id: str
    kind: str  # start end fail task script wait sleep call and-split and-join xor-split xor-join
    label: str
    step: AnyStep | None = None
    legal: list[str] = field(default_factory=list)
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0


@dataclass
class Edge:
    source: str
    target: str
    condition: str | None = None
    default: bool = False

    @property
    def id(self) -> str:
        return f"Flow_{self.source}_{self.target}"


@dataclass
class Graph:
    definition: BpfDefinition
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> Node:
        self.nodes[node.id] = node
        return node


# -- building and laying out --


def legal_references(
    d: BpfDefinition, q: QueryStep, catalog: Catalog, index: WhitelistIndex, at: dt.date
) -> list[str]:
    """The legal references under which the whitelist permits this query, for any executor."""
    requesters: list[set[str]] = []
    for e in d.owners.executors:
        requesters.append(
            {e.removeprefix("role:")} if e.startswith("role:") else set(catalog.org_roles(e))
        )
    expr = embedded(q.query.provider)
    if expr is None:
        providers = [q.query.provider]
    elif expr == "executor":
        providers = [o.id for o in catalog.orgs.values() if q.query.info in o.serves]
    else:
        m = re.fullmatch(r"inputs\.(\w+)", expr)
        spec = d.inputs.get(m.group(1)) if m else None
        providers = [
            o.id
            for o in catalog.orgs.values()
            if (spec is None or spec.role is None or spec.role in o.roles)
            and q.query.info in o.serves
        ] or list(catalog.orgs)
    found: set[str] = set()
    for roles in requesters:
        for org in providers:
            if org not in catalog.orgs:
                continue
            decision = index.decide(roles, d.task, catalog.org_roles(org), q.query.info, at)
            if decision.allowed:
                found.add(decision.legal_reference)
    return sorted(found)


def provider_label(d: BpfDefinition, q: QueryStep) -> str:
    expr = embedded(q.query.provider)
    if expr is None:
        return q.query.provider
    if expr == "executor":
        return "(its own records)"
    m = re.fullmatch(r"inputs\.(\w+)", expr)
    return f"(input {m.group(1)})" if m else f"(${{{expr}}})"


def build(
    d: BpfDefinition,
    catalog: Catalog | None = None,
    index: WhitelistIndex | None = None,
    at: dt.date | None = None,
) -> Graph:
    """The laid-out graph of ``d``; legal references need the catalog and the whitelist."""
    g = Graph(d)
    when = at or dt.date.today()

    def size(steps: list[AnyStep]) -> tuple[float, float]:
        dims = [step_size(s) for s in steps]
        return sum(w for w, _ in dims) + HGAP * (len(dims) - 1), max(h for _, h in dims)

    def lanes_of(s: ParallelStep | BranchStep) -> list[list[AnyStep]]:
        if isinstance(s, ParallelStep):
            return [list(lane) for lane in s.parallel]
        return [list(a.steps if isinstance(a, WhenArm) else a.otherwise) for a in s.branch]

    def step_size(s: AnyStep) -> tuple[float, float]:
        if isinstance(s, QueryStep):
            return TASK_W, TASK_H + NOTE_H
        if not isinstance(s, ParallelStep | BranchStep):
            return (EV, EV) if isinstance(s, FailStep | SleepStep) else (TASK_W, TASK_H)
        lanes = [size(lane) for lane in lanes_of(s)]
        if isinstance(s, BranchStep) and not any(isinstance(a, OtherwiseArm) for a in s.branch):
            lanes.append((0, 30))  # the default path straight through
        inner_w = max(w for w, _ in lanes)
        return GW + 2 * HGAP + inner_w + GW, sum(h for _, h in lanes) + VGAP * (len(lanes) - 1)

    def place_seq(steps: list[AnyStep], x: float, cy: float) -> tuple[str, str | None]:
        entry: str | None = None
        prev: str | None = None
        for s in steps:
            first, last = place(s, x, cy)
            entry = entry or first
            if prev is not None:
                g.edges.append(Edge(prev, first))
            prev = last
            x += step_size(s)[0] + HGAP
            if last is None:
                break
        assert entry is not None
        return entry, prev

    def place(s: AnyStep, x: float, cy: float) -> tuple[str, str | None]:
        w, h = step_size(s)
        if isinstance(s, QueryStep):
            label = f"{s.id}\n{s.query.info} ← {provider_label(d, s)}"
            legal = (
                legal_references(d, s, catalog, index, when)
                if catalog is not None and index is not None
                else []
            )
            top = cy - h / 2 + NOTE_H
            g.add(Node(s.id, "task", label, s, legal, x, top, TASK_W, TASK_H))
            return s.id, s.id
        if isinstance(s, SetStep):
            label = f"{s.id}\n" + ", ".join(s.set)
            g.add(Node(s.id, "script", label, s, [], x, cy - TASK_H / 2, TASK_W, TASK_H))
            return s.id, s.id
        if isinstance(s, FailStep):
            g.add(Node(s.id, "fail", s.fail.reason, s, [], x, cy - EV / 2, EV, EV))
            return s.id, None
        if isinstance(s, WaitStep):
            label = f"{s.id}\nwait for {s.wait.for_} (≤ {_duration(s.wait.timeout)})"
            g.add(Node(s.id, "wait", label, s, [], x, cy - TASK_H / 2, TASK_W, TASK_H))
            return s.id, s.id
        if isinstance(s, CallStep):
            label = f"{s.id}\ncall {s.call.bpf}"
            g.add(Node(s.id, "call", label, s, [], x, cy - TASK_H / 2, TASK_W, TASK_H))
            return s.id, s.id
        if isinstance(s, SleepStep):
            label = f"{s.id}: " + (
                f"sleep {_duration(s.sleep.for_)}" if s.sleep.for_ else f"until {s.sleep.until}"
            )
            g.add(Node(s.id, "sleep", label, s, [], x, cy - EV / 2, EV, EV))
            return s.id, s.id
        assert isinstance(s, ParallelStep | BranchStep)
        split_kind, join_kind = (
            ("and-split", "and-join") if isinstance(s, ParallelStep) else ("xor-split", "xor-join")
        )
        split = g.add(Node(s.id, split_kind, s.id, s, [], x, cy - GW / 2, GW, GW))
        join = g.add(Node(f"{s.id}__join", join_kind, "", s, [], x + w - GW, cy - GW / 2, GW, GW))
        lanes = lanes_of(s)
        conditions: list[str | None] = (
            [a.when if isinstance(a, WhenArm) else None for a in s.branch]
            if isinstance(s, BranchStep)
            else [None] * len(lanes)
        )
        top = cy - h / 2
        for lane, condition in zip(lanes, conditions, strict=True):
            lane_h = size(lane)[1]
            first, last = place_seq(lane, x + GW + HGAP, top + lane_h / 2)
            g.edges.append(
                Edge(
                    split.id,
                    first,
                    condition,
                    default=isinstance(s, BranchStep) and condition is None,
                )
            )
            if last is not None:
                g.edges.append(Edge(last, join.id))
            top += lane_h + VGAP
        if isinstance(s, BranchStep) and not any(isinstance(a, OtherwiseArm) for a in s.branch):
            g.edges.append(Edge(split.id, join.id, None, default=True))
        return split.id, join.id

    steps = list(d.steps)
    w, h = size(steps)
    cy = h / 2 + 20
    start = g.add(Node("StartEvent_1", "start", "start", None, [], 20, cy - EV / 2, EV, EV))
    first, last = place_seq(steps, 20 + EV + HGAP, cy)
    g.edges.insert(0, Edge(start.id, first))
    if last is not None:
        end = g.add(
            Node(
                "EndEvent_1", "end", "end", None, [], 20 + EV + HGAP + w + HGAP, cy - EV / 2, EV, EV
            )
        )
        g.edges.append(Edge(last, end.id))
    return g


# -- Mermaid --


def to_mermaid(g: Graph) -> str:
    def text(s: str) -> str:
        return s.replace('"', "#quot;").replace("\n", "<br/>")

    lines = ["flowchart LR"]
    for n in g.nodes.values():
        label = text(n.label + ("".join(f"\n{r}" for r in n.legal)))
        shape = {
            "start": f'(("{label}"))',
            "end": f'(("{label}"))',
            "fail": f'((("{label}")))',
            "task": f'["{label}"]',
            "script": f'[/"{label}"/]',
            "wait": f'>"{label}"]',
            "sleep": f'(["{label}"])',
            "call": f'[["{label}"]]',
            "and-split": '{"+"}',
            "and-join": '{"+"}',
            "xor-split": '{"×"}',
            "xor-join": '{"×"}',
        }[n.kind]
        lines.append(f"  {n.id}{shape}")
    for e in g.edges:
        if e.condition:
            lines.append(f'  {e.source} -- "{text(e.condition)}" --> {e.target}')
        elif e.default:
            lines.append(f'  {e.source} -- "otherwise" --> {e.target}')
        else:
            lines.append(f"  {e.source} --> {e.target}")
    return "\n".join(lines) + "\n"


# -- SVG through Graphviz --


def to_dot(g: Graph) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    out = [
        "digraph bpf {",
        "  rankdir=LR; bgcolor=white;",
        '  node [fontname="Noto Sans CJK JP, sans-serif", fontsize=11];',
        '  edge [fontname="Noto Sans CJK JP, sans-serif", fontsize=9];',
    ]
    for n in g.nodes.values():
        attrs = {
            "start": 'shape=circle label="" width=0.4 style=filled fillcolor="#e8f5e9"',
            "end": 'shape=circle label="" width=0.4 penwidth=3',
            "fail": f'shape=doublecircle label="" width=0.35 color="#aa1111" xlabel={q(n.label)}',
            "task": f'shape=box style="rounded,filled" fillcolor="#eef4fb" label={q(n.label + "".join(chr(10) + r for r in n.legal))}',
            "script": f"shape=box style=rounded label={q(n.label)}",
            "wait": f'shape=box style="rounded,dashed" label={q(n.label)}',
            "sleep": f'shape=circle label="" width=0.4 peripheries=2 xlabel={q(n.label)}',
            "call": f'shape=box style="rounded,bold" label={q(n.label)}',
            "and-split": 'shape=diamond label="+" width=0.5 height=0.5',
            "and-join": 'shape=diamond label="+" width=0.5 height=0.5',
            "xor-split": 'shape=diamond label="×" width=0.5 height=0.5',
            "xor-join": 'shape=diamond label="×" width=0.5 height=0.5',
        }[n.kind]
        out.append(f"  {q(n.id)} [{attrs}];")
    for e in g.edges:
        label = e.condition or ("otherwise" if e.default else "")
        out.append(
            f"  {q(e.source)} -> {q(e.target)}" + (f" [label={q(label)}]" if label else "") + ";"
        )
    out.append("}")
    return "\n".join(out) + "\n"


class RendererMissing(RuntimeError):
    """Graphviz's ``dot`` is not installed."""


def to_svg(g: Graph) -> str:
    import graphviz

    try:
        svg: str = graphviz.Source(to_dot(g)).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise RendererMissing(
            "SVG needs Graphviz's `dot` (Debian: apt-get install graphviz)"
        ) from None
    return svg


# -- BPMN 2.0 --


def _q(ns: str, tag: str) -> str:
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
    "and-split": "parallelGateway",
    "and-join": "parallelGateway",
    "xor-split": "exclusiveGateway",
    "xor-join": "exclusiveGateway",
}


def _duration(td: dt.timedelta) -> str:
    return f"{int(td.total_seconds())}s"


def to_bpmn(g: Graph) -> str:
    d = g.definition
    root = ET.Element(
        _q(BPMN, "definitions"),
        {
            "id": f"Definitions_{_ncname(d.bpf)}",
            "targetNamespace": "urn:renkei:bpf",
            "exporter": "renkei",
            "exporterVersion": "1",
        },
    )
    errors = {n.id: f"Error_{n.id}" for n in g.nodes.values() if n.kind == "fail"}
    for node_id, error_id in errors.items():
        ET.SubElement(root, _q(BPMN, "error"), {"id": error_id, "name": g.nodes[node_id].label})
    process = ET.SubElement(
        root,
        _q(BPMN, "process"),
        {
            "id": f"Process_{_ncname(d.bpf)}",
            "name": d.title.ja if hasattr(d.title, "ja") else str(d.title),
            "isExecutable": "false",
            _q(RENKEI, "bpf"): d.bpf,
            _q(RENKEI, "version"): str(d.version),
            _q(RENKEI, "task"): d.task,
            _q(RENKEI, "definer"): d.owners.definer,
            _q(RENKEI, "executors"): " ".join(d.owners.executors),
            _q(RENKEI, "header"): json.dumps(
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
            attrs[_q(RENKEI, "info")] = s.query.info
            attrs[_q(RENKEI, "provider")] = s.query.provider
            if s.query.about is not None:
                attrs[_q(RENKEI, "about")] = s.query.about
            extra = s.query.model_dump(
                mode="json", exclude={"info", "provider", "about"}, exclude_defaults=True
            )
            if extra:
                attrs[_q(RENKEI, "spec")] = json.dumps(extra, sort_keys=True)
        elif isinstance(s, SetStep):
            attrs[_q(RENKEI, "set")] = json.dumps(s.set, ensure_ascii=False)
        elif isinstance(s, WaitStep | SleepStep | CallStep):
            spec = getattr(s, s.kind)
            attrs[_q(RENKEI, "spec")] = json.dumps(
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
        el = ET.SubElement(process, _q(BPMN, _TAGS[n.kind]), attrs)
        for flow in incoming.get(n.id, []):
            ET.SubElement(el, _q(BPMN, "incoming")).text = flow
        for flow in outgoing.get(n.id, []):
            ET.SubElement(el, _q(BPMN, "outgoing")).text = flow
        if n.kind == "fail":
            ET.SubElement(el, _q(BPMN, "errorEventDefinition"), {"errorRef": errors[n.id]})
        if n.kind == "sleep":
            timer = ET.SubElement(el, _q(BPMN, "timerEventDefinition"), {"id": f"Timer_{n.id}"})
            if isinstance(s, SleepStep) and s.sleep.for_ is not None:
                duration = ET.SubElement(
                    timer, _q(BPMN, "timeDuration"), {_q(XSI, "type"): "bpmn:tFormalExpression"}
                )
                duration.text = f"PT{int(s.sleep.for_.total_seconds())}S"
        if n.kind == "script" and isinstance(s, SetStep):
            attrs_script = el
            attrs_script.set("scriptFormat", CEL)
            ET.SubElement(el, _q(BPMN, "script")).text = "\n".join(
                f"{k} = {v}" for k, v in s.set.items()
            )
        if n.kind == "task" and isinstance(s, QueryStep):
            text = f"{s.query.info} ← {provider_label(d, s)}\n" + (
                "\n".join(n.legal) if n.legal else "no whitelist row found"
            )
            notes.append((n, text))
    for e in g.edges:
        attrs = {"id": e.id, "sourceRef": _ncname(e.source), "targetRef": _ncname(e.target)}
        if e.condition:
            attrs["name"] = e.condition
        sequence_flow = ET.SubElement(process, _q(BPMN, "sequenceFlow"), attrs)
        if e.condition:
            cond = ET.SubElement(
                sequence_flow,
                _q(BPMN, "conditionExpression"),
                {_q(XSI, "type"): "bpmn:tFormalExpression", "language": CEL},
            )
            cond.text = e.condition
    for n, text in notes:
        note = ET.SubElement(process, _q(BPMN, "textAnnotation"), {"id": f"Note_{n.id}"})
        ET.SubElement(note, _q(BPMN, "text")).text = text
        ET.SubElement(
            process,
            _q(BPMN, "association"),
            {"id": f"Assoc_{n.id}", "sourceRef": n.id, "targetRef": f"Note_{n.id}"},
        )

    diagram = ET.SubElement(root, _q(BPMNDI, "BPMNDiagram"), {"id": "Diagram_1"})
    plane = ET.SubElement(
        diagram, _q(BPMNDI, "BPMNPlane"), {"id": "Plane_1", "bpmnElement": process.get("id", "")}
    )

    def bounds(parent: ET.Element, x: float, y: float, w: float, h: float) -> None:
        ET.SubElement(
            parent,
            _q(DC, "Bounds"),
            {"x": f"{x:.0f}", "y": f"{y:.0f}", "width": f"{w:.0f}", "height": f"{h:.0f}"},
        )

    for n in g.nodes.values():
        shape = ET.SubElement(
            plane, _q(BPMNDI, "BPMNShape"), {"id": f"{n.id}_di", "bpmnElement": _ncname(n.id)}
        )
        bounds(shape, n.x, n.y, n.w, n.h)
    for n, _ in notes:
        shape = ET.SubElement(
            plane, _q(BPMNDI, "BPMNShape"), {"id": f"Note_{n.id}_di", "bpmnElement": f"Note_{n.id}"}
        )
        bounds(shape, n.x, n.y - NOTE_H, TASK_W + 20, NOTE_H - 10)
    for e in g.edges:
        edge = ET.SubElement(
            plane, _q(BPMNDI, "BPMNEdge"), {"id": f"{e.id}_di", "bpmnElement": e.id}
        )
        for px, py in _waypoints(g.nodes[e.source], g.nodes[e.target]):
            ET.SubElement(edge, _q(DI, "waypoint"), {"x": f"{px:.0f}", "y": f"{py:.0f}"})
    for n, _ in notes:
        edge = ET.SubElement(
            plane,
            _q(BPMNDI, "BPMNEdge"),
            {"id": f"Assoc_{n.id}_di", "bpmnElement": f"Assoc_{n.id}"},
        )
        for px, py in ((n.x + TASK_W / 2, n.y), (n.x + TASK_W / 2, n.y - 10)):
            ET.SubElement(edge, _q(DI, "waypoint"), {"x": f"{px:.0f}", "y": f"{py:.0f}"})
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


# -- BPMN import --


class BpmnImportError(ValueError):
    """A BPMN file renkei cannot read as a BPF (names the element)."""


def from_bpmn(text: str) -> dict[str, Any]:
    """A BPF draft (as the YAML mapping) from a BPMN 2.0 process of the elements above."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise BpmnImportError(f"not XML: {err}") from None
    process = root.find(_q(BPMN, "process"))
    if process is None:
        raise BpmnImportError("no bpmn:process element")
    elements = {el.get("id", ""): el for el in process}
    flows = [el for el in process if el.tag == _q(BPMN, "sequenceFlow")]
    out_of: dict[str, list[ET.Element]] = {}
    for f in flows:
        out_of.setdefault(f.get("sourceRef", ""), []).append(f)

    def tag(el: ET.Element) -> str:
        return el.tag.rsplit("}", 1)[-1]

    def step_id(el: ET.Element) -> str:
        return el.get("id", "")

    def next_of(node_id: str) -> str | None:
        outs = out_of.get(node_id, [])
        if len(outs) > 1:
            raise BpmnImportError(f"{node_id}: a task with more than one outgoing flow")
        return outs[0].get("targetRef") if outs else None

    def seq(node_id: str | None, stop: str | None) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        while node_id is not None and node_id != stop:
            el = elements.get(node_id)
            if el is None:
                raise BpmnImportError(f"flow to unknown element {node_id}")
            kind = tag(el)
            if kind == "endEvent":
                if el.find(_q(BPMN, "errorEventDefinition")) is not None:
                    steps.append(
                        {"id": step_id(el), "fail": {"reason": el.get("name", "rejected")}}
                    )
                return steps
            if kind == "serviceTask":
                query: dict[str, Any] = {
                    "info": el.get(_q(RENKEI, "info")),
                    "provider": el.get(_q(RENKEI, "provider")),
                }
                if query["info"] is None or query["provider"] is None:
                    raise BpmnImportError(
                        f"{node_id}: a service task needs renkei:info and renkei:provider"
                    )
                if el.get(_q(RENKEI, "about")) is not None:
                    query["about"] = el.get(_q(RENKEI, "about"))
                query.update(json.loads(el.get(_q(RENKEI, "spec"), "{}")))
                steps.append({"id": step_id(el), "query": query})
                node_id = next_of(node_id)
            elif kind in ("receiveTask", "intermediateCatchEvent", "callActivity"):
                step_kind = {
                    "receiveTask": "wait",
                    "intermediateCatchEvent": "sleep",
                    "callActivity": "call",
                }[kind]
                raw = el.get(_q(RENKEI, "spec"))
                if raw is None:
                    raise BpmnImportError(f"{node_id}: a bpmn:{kind} needs renkei:spec")
                steps.append({"id": step_id(el), step_kind: json.loads(raw)})
                node_id = next_of(node_id)
            elif kind == "scriptTask":
                raw = el.get(_q(RENKEI, "set"))
                if raw is not None:
                    assigned = json.loads(raw)
                else:
                    script = el.findtext(_q(BPMN, "script")) or ""
                    assigned = dict(
                        (k.strip(), v.strip())
                        for k, _, v in (
                            line.partition("=") for line in script.splitlines() if "=" in line
                        )
                    )
                steps.append({"id": step_id(el), "set": assigned})
                node_id = next_of(node_id)
            elif kind in ("parallelGateway", "exclusiveGateway"):
                join = f"{node_id}__join"
                if join not in elements:
                    raise BpmnImportError(f"{node_id}: no matching join gateway {join}")
                outs = out_of.get(node_id, [])
                if kind == "parallelGateway":
                    steps.append(
                        {"id": node_id, "parallel": [seq(f.get("targetRef"), join) for f in outs]}
                    )
                else:
                    default = el.get("default")
                    arms: list[dict[str, Any]] = []
                    otherwise: list[dict[str, Any]] | None = None
                    for f in outs:
                        lane = seq(f.get("targetRef"), join) if f.get("targetRef") != join else []
                        if f.get("id") == default:
                            if lane:
                                otherwise = lane
                            continue
                        cond = f.findtext(_q(BPMN, "conditionExpression"))
                        if not cond:
                            raise BpmnImportError(
                                f"{f.get('id')}: a branch flow needs a condition or must be the default"
                            )
                        arms.append({"when": cond.strip(), "steps": lane})
                    if otherwise is not None:
                        arms.append({"otherwise": otherwise})
                    steps.append({"id": node_id, "branch": arms})
                node_id = next_of(join)
            else:
                raise BpmnImportError(f"{node_id}: renkei does not read bpmn:{kind}")
        return steps

    start = next((el for el in process if tag(el) == "startEvent"), None)
    if start is None:
        raise BpmnImportError("no start event")
    header = json.loads(process.get(_q(RENKEI, "header"), "{}"))
    draft: dict[str, Any] = {
        "bpf": process.get(_q(RENKEI, "bpf"))
        or process.get("id", "imported").removeprefix("Process_"),
        "version": int(process.get(_q(RENKEI, "version"), "1")),
        "task": process.get(_q(RENKEI, "task"), ""),
        "owners": {
            "definer": process.get(_q(RENKEI, "definer"), ""),
            "executors": (process.get(_q(RENKEI, "executors")) or "").split(),
        },
        **header,
        "steps": seq(next_of(start.get("id", "")), None),
    }
    draft.setdefault("title", {"ja": process.get("name", ""), "en": process.get("name", "")})
    draft.setdefault("triggers", ["counter"])
    return draft
