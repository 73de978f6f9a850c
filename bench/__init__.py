"""Benchmarks: renkei against plain Temporal on the same dev server, in the same run."""

import renkei  # noqa: F401  (first: gRPC without its fork handlers, see renkei/__init__.py)
