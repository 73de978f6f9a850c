"""Drawing a BPF so people can foresee how their data will be used: Mermaid, SVG, BPMN 2.0.

One module per format, each translating the same laid-out step graph:

- :mod:`.graph`: the graph and its layout (:func:`build`), which every format draws; the
  labels of its queries (provider, legal references) come from :mod:`.labels`.
- :mod:`.mermaid`: flowchart text.
- :mod:`.svg`: Graphviz DOT text, and the SVG ``dot`` draws from it.
- :mod:`.bpmn`: BPMN 2.0 XML, process plus diagram interchange.
- :mod:`.bpmn_import`: a BPF draft read back from BPMN.

The names callers use are re-exported here. Domain code: imports no ``temporalio``.
"""

from renkei.bpf.render.bpmn import to_bpmn
from renkei.bpf.render.bpmn_import import BpmnImportError, from_bpmn
from renkei.bpf.render.graph import Edge, Graph, Node, build
from renkei.bpf.render.labels import legal_references, provider_label
from renkei.bpf.render.mermaid import to_mermaid
from renkei.bpf.render.svg import RendererMissing, to_dot, to_svg

__all__ = [
    "BpmnImportError",
    "Edge",
    "Graph",
    "Node",
    "RendererMissing",
    "build",
    "from_bpmn",
    "legal_references",
    "provider_label",
    "to_bpmn",
    "to_dot",
    "to_mermaid",
    "to_svg",
]
