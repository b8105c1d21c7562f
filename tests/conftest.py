"""Shared fixtures. The suite runs on PostgreSQL when DATABASE_URL points at it (make test)."""

from __future__ import annotations

import base64
import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture(scope="session")
def live_service(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One real server process for the session, on the test database (use with transactional_db)."""
    from tests.live import on_test_database

    service = on_test_database(tmp_path_factory.mktemp("live"), DEVICE_FLOW_INTERVAL="1").start()
    yield service
    service.stop()


@pytest.fixture(autouse=True)
def _receipt_key(settings: Any) -> Ed25519PrivateKey:
    settings.RECEIPT_SIGNING_KEY = base64.b64encode(TEST_RECEIPT_KEY.private_bytes_raw()).decode()
    return TEST_RECEIPT_KEY


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Async tests (only they) close the channel layer's connections when they end; an
    autouse async fixture would also wrap sync tests, and Playwright's sync API then finds an
    event loop already running."""
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.fixturenames.append("_close_channel_layer_connections")  # type: ignore[attr-defined]


@pytest.fixture
async def _close_channel_layer_connections(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After an async test, close the Redis channel layer's connections on the test's loop.

    A consumer a test leaves connected keeps waiting for channel messages; since the layer's
    blocking receive no longer times out (issue 12), that wait would outlive the test and hang
    the loop's shutdown. Closing its connections ends it, as a server shutting down does.
    """
    yield
    if not inspect.iscoroutinefunction(request.function):
        return
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    close = getattr(layer, "close_pools", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
