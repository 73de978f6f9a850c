"""The step graph every format draws, laid out left to right.

One graph is built from the definition (start, a task per query or set step, gateways for
``parallel`` and ``branch``, an error end event per ``fail``, the end) and laid out left to
right: a BPF is a series-parallel graph, so the layout is exact and needs no search. Each query
carries the info item, the provider (or the input naming it) and the legal references under
which the whitelist permits it (:mod:`.labels`). The formats only translate this graph; its
coordinates are those of the BPMN diagram.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from renkei.bpf.models import (
    ActStep,
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
from renkei.bpf.render.labels import (
    act_references,
    legal_references,
    partner_label,
    provider_label,
)
from whitelist.decide import WhitelistIndex, japan_today
from whitelist.models import Catalog

# Box sizes and gaps of the layout (BPMN diagram units): a task, its note above a query,
# a gateway, an event, and the horizontal and vertical gaps between them.
TASK_W, TASK_H, NOTE_H = 140, 80, 70
GW, EV, HGAP, VGAP = 50, 36, 50, 40


@dataclass
class Node:
    """One drawn element of the graph: an event, a task or a gateway, with its box.

    Attributes:
        id: The step's id; a gateway's join is ``<id>__join``, the events ``StartEvent_1``
            and ``EndEvent_1``.
        kind: One of start, end, fail, task, act, script, wait, sleep, call, and-split, and-join,
            xor-split, xor-join.
        label: The text drawn, its lines separated by newlines.
        step: The step drawn; ``None`` for the start and end events.
        legal: For a query or an act, the legal references under which the whitelist permits
            it.
        x: The box's left edge.
        y: The box's top edge.
        w: The box's width.
        h: The box's height.
    """

    id: str
    kind: str
    label: str
    step: AnyStep | None = None
    legal: list[str] = field(default_factory=list)
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0


@dataclass
class Edge:
    """A sequence flow from one node to another.

    Attributes:
        source: The id of the node it leaves.
        target: The id of the node it enters.
        condition: On a flow out of a ``branch`` split, the CEL condition of its arm.
        default: The flow taken when no condition holds (``otherwise``, or straight through).
    """

    source: str
    target: str
    condition: str | None = None
    default: bool = False

    @property
    def id(self) -> str:
        """The flow's id, named by its two ends."""
        return f"Flow_{self.source}_{self.target}"


@dataclass
class Graph:
    """A definition's laid-out graph, which every format draws.

    Attributes:
        definition: The definition drawn.
        nodes: The nodes by id, in the order they were placed.
        edges: The sequence flows, the start event's first.
    """

    definition: BpfDefinition
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, node: Node) -> Node:
        """Add ``node`` to the graph.

        Args:
            node: The node, keyed by its id.

        Returns:
            The same node.
        """
        self.nodes[node.id] = node
        return node


def build(
    d: BpfDefinition,
    catalog: Catalog | None = None,
    index: WhitelistIndex | None = None,
    at: dt.date | None = None,
) -> Graph:
    """The laid-out graph of ``d``; legal references need the catalog and the whitelist.

    Args:
        d: The definition to draw.
        catalog: The organisations; with ``index``, each query is annotated with the legal
            references under which the whitelist permits it.
        index: The whitelist.
        at: The day the whitelist is read for (default: today).

    Returns:
        The graph, laid out left to right.
    """
    g = Graph(d)
    when = at or japan_today()

    def size(steps: list[AnyStep]) -> tuple[float, float]:
        dims = [step_size(s) for s in steps]
        return sum(w for w, _ in dims) + HGAP * (len(dims) - 1), max(h for _, h in dims)

    def lanes_of(s: ParallelStep | BranchStep) -> list[list[AnyStep]]:
        if isinstance(s, ParallelStep):
            return [list(lane) for lane in s.parallel]
        return [list(a.steps if isinstance(a, WhenArm) else a.otherwise) for a in s.branch]

    def step_size(s: AnyStep) -> tuple[float, float]:
        if isinstance(s, QueryStep | ActStep):
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
        if isinstance(s, ActStep):
            label = f"{s.id}\n{s.act.action} → {partner_label(s)}"
            legal = (
                act_references(d, s, catalog, index, when)
                if catalog is not None and index is not None
                else []
            )
            top = cy - h / 2 + NOTE_H
            g.add(Node(s.id, "act", label, s, legal, x, top, TASK_W, TASK_H))
            return s.id, s.id
        if isinstance(s, SetStep):
            label = f"{s.id}\n" + ", ".join(s.set)
            g.add(Node(s.id, "script", label, s, [], x, cy - TASK_H / 2, TASK_W, TASK_H))
            return s.id, s.id
        if isinstance(s, FailStep):
            g.add(Node(s.id, "fail", s.fail.reason, s, [], x, cy - EV / 2, EV, EV))
            return s.id, None
        if isinstance(s, WaitStep):
            who = {"citizen": " by the citizen", "agency": " by the agency"}.get(
                s.wait.by or "", ""
            )
            label = f"{s.id}\nwait for {s.wait.for_}{who} (≤ {_duration(s.wait.timeout)})"
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


def _duration(td: dt.timedelta) -> str:
    """In the largest whole unit, as definitions write it: 30d, 12h, 90s."""
    seconds = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
