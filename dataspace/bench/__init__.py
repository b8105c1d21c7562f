"""Benchmarks that wire every app together (run with ``python -m dataspace.bench.<name>``)."""
