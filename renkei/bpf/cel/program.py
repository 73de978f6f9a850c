"""The program a workflow run evaluates: each pinned definition compiled once per process.

This is the one CEL module the interpreter workflow imports, and the one the sandbox passes
through (``workers.plugin.PASSTHROUGH``; the sandbox runs for the replay of recorded histories,
and in workers with ``RENKEI_WORKFLOW_SANDBOX``): every workflow run shares the host's module,
so the cache below holds across runs, and the modules it imports (the compiler, the CEL C++
runtime, protobuf) are loaded once, in the host, never inside the sandbox. Programs are cached
by the definition's content hash, so a worker compiles each definition once, on the first run
that needs it. The other names the interpreter uses are re-exported here.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from renkei.bpf.cel.compiled import CompiledBpf
from renkei.bpf.cel.compiler import compile_definition
from renkei.bpf.cel.types import DeterministicFailure, ExpressionError, embedded
from renkei.bpf.models import BpfDefinition

__all__ = [
    "CompiledBpf",
    "DeterministicFailure",
    "ExpressionError",
    "compiled_for",
    "embedded",
    "shared_definition",
]

_CACHE: dict[str, CompiledBpf] = {}
_DEFINITIONS: dict[str, BpfDefinition] = {}
_LOCK = threading.Lock()


def compiled_for(
    content_hash: str, definition: BpfDefinition, info_schemas: Mapping[str, str]
) -> CompiledBpf:
    """The compiled program of a pinned definition, compiled once per process.

    Args:
        content_hash: The pinned definition's content hash, the cache key.
        definition: The definition the hash pins.
        info_schemas: The schema class name of each info item the definition queries.

    Returns:
        The compiled definition, shared by every run of that content in this process.
    """
    with _LOCK:
        found = _CACHE.get(content_hash)
        if found is None:
            found = compile_definition(definition, info_schemas)
            if len(_CACHE) > 256:
                _CACHE.clear()
            _CACHE[content_hash] = found
        return found


def shared_definition(content_hash: str, definition: BpfDefinition) -> BpfDefinition:
    """The one copy of a pinned definition that every run of it in this process holds.

    Each run reads its definition from its own history (the hub's answer, or the state it
    continued with): without this, a worker holding a thousand waiting runs of one BPF in its
    cache held a thousand equal copies of it. The content hash pins the content, so the copy
    first read stands for every later one (a run never changes its definition).
    """
    with _LOCK:
        found = _DEFINITIONS.get(content_hash)
        if found is None:
            if len(_DEFINITIONS) > 256:
                _DEFINITIONS.clear()
            found = _DEFINITIONS[content_hash] = definition
        return found
