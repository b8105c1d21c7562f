"""The chaos cases' fixture: a fresh production topology per case (tests/chaos/topology.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.chaos.topology import Stack, broker


@pytest.fixture
def stack(tmp_path: Path, settings: Any) -> Iterator[Stack]:
    if connection.vendor != "postgresql":
        pytest.skip("the production topology runs on PostgreSQL")
    for key in ("celery", "unacked", "unacked_index"):
        broker().delete(key)
    built = Stack(tmp_path)
    settings.MEDIA_ROOT = built.media  # read what the web processes and workers wrote
    try:
        yield built
    finally:
        built.close()
