"""Benchmarks that wire the pure cores together (``python -m dataspace.bench.<name>``)."""
