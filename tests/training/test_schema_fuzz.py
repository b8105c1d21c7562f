"""schemathesis over the published OpenAPI schema: no input may cause a server error."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.factories import open_request
from tests.training.conftest import TokenMaker
from training.models import Provider


@pytest.fixture
def api_schema() -> Any:
    from dataspace.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def token(provider: Provider, make_token: TokenMaker) -> str:
    open_request(provider=provider)
    return make_token(provider)


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors(case: Any, token: str) -> None:
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, checks=(not_a_server_error,))
    assert response.status_code < 500
    if response.status_code >= 400 and response.headers.get("Content-Type", [""])[0].startswith(
        "application/json"
    ):
        assert set(response.json()) == {"error"}


def test_schema_is_served_and_documented(client: Any) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"redoc" in docs.content.lower()
