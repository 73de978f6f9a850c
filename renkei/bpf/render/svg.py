"""SVG through Graphviz: the step graph as DOT text, and the SVG ``dot`` draws from it.

Nothing is fetched at run time: the SVG needs only Graphviz's ``dot`` program, run through the
``graphviz`` package, which is imported only when an SVG is drawn.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

from renkei.bpf.render.graph import Graph


def to_dot(g: Graph) -> str:
    """The graph as Graphviz DOT text.

    Args:
        g: A graph from :func:`~renkei.bpf.render.graph.build`.

    Returns:
        A ``digraph`` laid out left to right, each query with its legal references.
    """

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
            "act": f'shape=box style="rounded,filled,bold" fillcolor="#fdf3e7" label={q(n.label + "".join(chr(10) + r for r in n.legal))}',
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
    """The graph drawn as SVG by Graphviz's ``dot``.

    Args:
        g: A graph from :func:`~renkei.bpf.render.graph.build`.

    Returns:
        The SVG document.

    Raises:
        RendererMissing: ``dot`` is not installed.
    """
    import graphviz

    try:
        svg: str = graphviz.Source(to_dot(g)).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise RendererMissing(
            "SVG needs Graphviz's `dot` (Debian: apt-get install graphviz)"
        ) from None
    return svg
