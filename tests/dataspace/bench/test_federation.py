"""The federation benchmark's wiring (its figures are printed by ``make bench-federation``)."""

from __future__ import annotations


def test_the_federation_benchmark_starts_its_processes_from_the_repository() -> None:
    """It moved under dataspace/bench/: a server started from the package's folder found
    ``dataspace/celery.py`` as ``celery`` (seen: "the server did not start")."""
    from dataspace.bench import federation

    assert (federation.ROOT / "manage.py").is_file()
