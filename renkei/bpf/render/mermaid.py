"""Mermaid: the step graph as flowchart text, one shape per kind of node.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

from renkei.bpf.render.graph import Graph


def to_mermaid(g: Graph) -> str:
    """The graph as a Mermaid flowchart.

    Args:
        g: A graph from :func:`~renkei.bpf.render.graph.build`.

    Returns:
        The flowchart text (``flowchart LR``), each query with its legal references.
    """

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
            "act": f'[/"{label}"\\]',
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
