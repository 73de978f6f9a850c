"""Benchmarks: renkei against plain Temporal on the same dev server, in the same run."""
