"""The BPF description format: models, loader, CEL expressions, validation, inputs, admission,
the registry of versions and the diagrams.

Domain code: it imports no ``temporalio``, so a definition can be read, validated and drawn
anywhere, and the interpreter workflow (``workflows/``) executes what these models describe.
"""
