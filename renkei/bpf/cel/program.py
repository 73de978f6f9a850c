"""The program a workflow run evaluates: each pinned definition compiled once per process.

This is the one CEL module the interpreter workflow imports, and the one the worker's sandbox
passes through (``workers.plugin.PASSTHROUGH``): every workflow run shares the host's module,
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

__all__ = ["CompiledBpf", "DeterministicFailure", "ExpressionError", "compiled_for", "embedded"]

_CACHE: dict[str, CompiledBpf] = {}
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
