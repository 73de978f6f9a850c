"""CEL expressions of a BPF: typed compilation at validation time, evaluation in the workflow.

Expressions are compiled by ``cel-expr-python`` (the CEL C++ runtime) against declared types,
before anything runs. Each module imports only those listed before it:

- :mod:`.types`: the protobuf messages expressions are checked against (payload schemas,
  inputs, step outputs), and the names every module shares (``ExpressionError``, ``embedded``).
- :mod:`.functions`: extension functions on payload types (``record.lives_with(code)``).
- :mod:`.compiled`: ``CompiledBpf``, a definition's message types and compiled expressions,
  and their evaluation.
- :mod:`.compiler`: ``compile_definition``, every expression type-checked in its scope.
- :mod:`.program`: a pinned definition's program, compiled once per process; the one module
  the interpreter workflow imports, and the sandbox (where it runs) passes through.

Nothing is imported here, so importing one module loads only what it needs. Domain code:
imports no ``temporalio``.
"""
