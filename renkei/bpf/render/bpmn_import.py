"""BPMN 2.0 import: a BPF draft read from a process of the elements :mod:`.bpmn` writes.

The steps are found by following the sequence flows from the start event; a gateway's lanes
end at its matching join (``<id>__join``). renkei's own attributes are read where present, so
an exported file reads back into the same steps; a script task without them is read from its
``name = expression`` lines. Anything else is refused, naming the element.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from renkei.bpf.render.bpmn import BPMN, RENKEI, qname


class BpmnImportError(ValueError):
    """A BPMN file renkei cannot read as a BPF (names the element)."""


def from_bpmn(text: str) -> dict[str, Any]:
    """A BPF draft (as the YAML mapping) from a BPMN 2.0 process of the elements renkei writes.

    Args:
        text: The BPMN XML.

    Returns:
        The draft: the header from ``renkei:`` attributes (title and triggers defaulted if
        absent), the steps by following the sequence flows from the start event. It is not
        validated: load it as a BPF to check it.

    Raises:
        BpmnImportError: The text is not XML, or holds an element or shape renkei cannot
            read as a step (the error names it).
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise BpmnImportError(f"not XML: {err}") from None
    process = root.find(qname(BPMN, "process"))
    if process is None:
        raise BpmnImportError("no bpmn:process element")
    elements = {el.get("id", ""): el for el in process}
    flows = [el for el in process if el.tag == qname(BPMN, "sequenceFlow")]
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
                if el.find(qname(BPMN, "errorEventDefinition")) is not None:
                    steps.append(
                        {"id": step_id(el), "fail": {"reason": el.get("name", "rejected")}}
                    )
                return steps
            if kind == "serviceTask":
                query: dict[str, Any] = {
                    "info": el.get(qname(RENKEI, "info")),
                    "provider": el.get(qname(RENKEI, "provider")),
                }
                if query["info"] is None or query["provider"] is None:
                    raise BpmnImportError(
                        f"{node_id}: a service task needs renkei:info and renkei:provider"
                    )
                if el.get(qname(RENKEI, "about")) is not None:
                    query["about"] = el.get(qname(RENKEI, "about"))
                query.update(json.loads(el.get(qname(RENKEI, "spec"), "{}")))
                steps.append({"id": step_id(el), "query": query})
                node_id = next_of(node_id)
            elif kind in ("receiveTask", "intermediateCatchEvent", "callActivity", "sendTask"):
                step_kind = {
                    "receiveTask": "wait",
                    "intermediateCatchEvent": "sleep",
                    "callActivity": "call",
                    "sendTask": "act",
                }[kind]
                raw = el.get(qname(RENKEI, "spec"))
                if raw is None:
                    raise BpmnImportError(f"{node_id}: a bpmn:{kind} needs renkei:spec")
                steps.append({"id": step_id(el), step_kind: json.loads(raw)})
                node_id = next_of(node_id)
            elif kind == "scriptTask":
                raw = el.get(qname(RENKEI, "set"))
                if raw is not None:
                    assigned = json.loads(raw)
                else:
                    script = el.findtext(qname(BPMN, "script")) or ""
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
                        cond = f.findtext(qname(BPMN, "conditionExpression"))
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
    header = json.loads(process.get(qname(RENKEI, "header"), "{}"))
    draft: dict[str, Any] = {
        "bpf": process.get(qname(RENKEI, "bpf"))
        or process.get("id", "imported").removeprefix("Process_"),
        "version": int(process.get(qname(RENKEI, "version"), "1")),
        "task": process.get(qname(RENKEI, "task"), ""),
        "owners": {
            "definer": process.get(qname(RENKEI, "definer"), ""),
            "executors": (process.get(qname(RENKEI, "executors")) or "").split(),
        },
        **header,
        "steps": seq(next_of(start.get("id", "")), None),
    }
    draft.setdefault("title", {"ja": process.get("name", ""), "en": process.get("name", "")})
    draft.setdefault("triggers", ["counter"])
    return draft
