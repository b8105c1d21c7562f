"""Shared fixtures. The suite runs on PostgreSQL when DATABASE_URL points at it (make test)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TEST_RECEIPT_KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="session", autouse=True)
def _require_postgres_in_ci(django_db_setup: Any, django_db_blocker: Any) -> None:
    """CI sets DATASPACE_REQUIRE_POSTGRES: a run that fell back to SQLite must fail."""
    from django.db import connection

    if os.environ.get("DATASPACE_REQUIRE_POSTGRES") and connection.vendor != "postgresql":
        pytest.exit(
            f"CI requires PostgreSQL, but the tests run on {connection.vendor}", returncode=3
        )


@pytest.fixture(autouse=True)
def _receipt_key(settings: Any) -> Ed25519PrivateKey:
    settings.RECEIPT_SIGNING_KEY = base64.b64encode(TEST_RECEIPT_KEY.private_bytes_raw()).decode()
    return TEST_RECEIPT_KEY


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
