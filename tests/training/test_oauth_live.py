"""The OAuth2 client-credentials flow, driven by requests-oauthlib against a live server process."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from dataspace.demo import demo_request_spec, demo_weights
from tests.factories import breast_category
from training.models import ModelRequest
from training.services import provider_client_issue, provider_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # The live server listens on 127.0.0.1 over plain HTTP; oauthlib insists on TLS otherwise.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def session_for(
    live_service: Any, client_id: str, secret: str, scope: list[str] | None
) -> OAuth2Session:
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
    session.fetch_token(
        token_url=f"{live_service.url}/o/token/",
        client_id=client_id,
        client_secret=secret,
        scope=scope,
    )
    return session


def test_client_credentials_flow_then_submit_and_read(live_service: Any) -> None:
    breast_category()
    provider = provider_create(name="Live Lab", contact_email="live@lab.example")
    application, secret = provider_client_issue(provider=provider)

    session = session_for(live_service, application.client_id, secret, None)
    assert set(session.token["scope"]) == {"requests:write", "requests:read", "models:read"}
    assert session.token["token_type"] == "Bearer"

    spec = demo_request_spec()
    created = session.post(
        f"{live_service.url}/api/v1/model-requests/",
        files={"spec": (None, json.dumps(spec)), "weights": ("w.safetensors", demo_weights(spec))},
    )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert ModelRequest.objects.get(pk=request_id).provider == provider

    status = session.get(f"{live_service.url}/api/v1/model-requests/{request_id}/")
    assert status.status_code == 200
    assert status.json()["status"] == "recruiting"


def test_read_only_token_cannot_submit_over_the_wire(live_service: Any) -> None:
    breast_category()
    provider = provider_create(name="Reader Lab", contact_email="read@lab.example")
    application, secret = provider_client_issue(provider=provider)
    session = session_for(live_service, application.client_id, secret, ["requests:read"])
    spec = demo_request_spec()
    refused = session.post(
        f"{live_service.url}/api/v1/model-requests/",
        files={"spec": (None, json.dumps(spec)), "weights": ("w.safetensors", demo_weights(spec))},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert ModelRequest.objects.count() == 0


def test_wrong_secret_and_foreign_scope_are_refused(live_service: Any) -> None:
    provider = provider_create(name="Scope Lab", contact_email="scope@lab.example")
    application, secret = provider_client_issue(provider=provider)
    wrong = requests.post(
        f"{live_service.url}/o/token/",
        data={"grant_type": "client_credentials"},
        auth=(application.client_id, "not-the-secret"),
        timeout=10,
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    pod_scope = requests.post(
        f"{live_service.url}/o/token/",
        data={"grant_type": "client_credentials", "scope": "pod"},
        auth=(application.client_id, secret),
        timeout=10,
    )
    assert pod_scope.status_code == 400
    assert pod_scope.json()["error"] == "invalid_scope"
