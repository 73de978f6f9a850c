import renkei  # noqa: F401  (first: gRPC without its fork handlers, see renkei/__init__.py)
