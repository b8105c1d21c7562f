"""schemathesis over the key-log endpoints with a real pod token: no input causes a server error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from dataspace.wsgi import application
from pods.services import pod_provision
from tests.factories import UserFactory

schema = schemathesis.openapi.from_wsgi("/api/schema/", application).include(
    path_regex="/api/v1/pod/key-log/"
)


@pytest.fixture(autouse=True)
def _keep_test_connection() -> Iterator[None]:
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def pod_token(db: Any) -> str:
    for _ in range(5):
        public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        _, token, _ = pod_provision(owner=UserFactory(), name="Phone", public_key=public)
    return token


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case: Any, pod_token: str) -> None:
    response = case.call(headers={"Authorization": f"Bearer {pod_token}"})
    case.validate_response(response, checks=(not_a_server_error,))
    assert response.status_code < 500
