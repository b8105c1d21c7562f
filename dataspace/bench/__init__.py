"""Benchmarks that wire every app together (run with ``python -m dataspace.bench.<name>``):
``federation`` (live server and pods) and ``learning`` (strategies under skew, in-process)."""
