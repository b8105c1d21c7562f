"""The provider API: scopes and ownership, submission, and every kind of bad input."""

from __future__ import annotations

import copy
import io
import json
import math
import pickle
import struct
from typing import Any

import pytest
import torch
from django.core.files.storage import default_storage
from django.test import Client
from safetensors.torch import save as save_safetensors

from consent.models import PrivacyNotice
from consent.services import consent_grant, consent_refuse
from dataspace.demo import demo_request_spec, demo_weights
from pods.agent.consent import verify_signed
from pods.agent.protocol import plan_hash
from tests.factories import ProviderFactory, UserFactory, open_request
from tests.training.conftest import TokenMaker
from training.models import ModelRequest, ModelVersion, Provider

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


def submit(client: Client, spec: Any, weights: bytes) -> Any:
    spec_text = spec if isinstance(spec, str) else json.dumps(spec)
    return client.post(
        f"{BASE}/model-requests/",
        {"spec": spec_text, "weights": io.BytesIO(weights)},
    )


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


# --- submission -------------------------------------------------------------------------------


def test_submit_validates_stores_renders_notice_and_opens_recruiting(
    api: Client, provider: Provider
) -> None:
    spec = demo_request_spec()
    weights = demo_weights(spec)

    response = submit(api, spec, weights)

    assert response.status_code == 201, response.content
    body = response.json()
    model_request = ModelRequest.objects.get(pk=body["id"])
    assert body["status"] == "recruiting"
    assert model_request.provider == provider
    assert model_request.weights.read() == weights
    notice = PrivacyNotice.objects.get(model_request=model_request)
    assert body["plan_hash"] == plan_hash(spec, body["weights_sha256"], notice.content_hash)
    assert body["consents"] == {"given": 0, "refused": 0, "withdrawn": 0, "expired": 0}
    assert body["parameter_count"] == 30 * 16 + 16 + 16 * 2 + 2
    assert ModelVersion.objects.get(model_request=model_request).round_number == 0


def test_status_shows_aggregate_consent_counts_only(api: Client, provider: Provider) -> None:
    model_request = open_request(provider=provider)
    consent_grant(user=UserFactory(), model_request=model_request)
    consent_grant(user=UserFactory(), model_request=model_request)
    consent_refuse(user=UserFactory(), model_request=model_request)

    body = api.get(f"{BASE}/model-requests/{model_request.pk}/").json()

    assert body["consents"] == {"given": 2, "refused": 1, "withdrawn": 0, "expired": 0}
    assert "person" not in json.dumps(body)


def test_download_model_and_card(api: Client, provider: Provider) -> None:
    model_request = open_request(provider=provider)
    response = api.get(f"{BASE}/model-requests/{model_request.pk}/model")
    assert response.status_code == 200
    content = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert content == model_request.weights.open("rb").read()
    assert response["ETag"] == f'"{model_request.weights_sha256}"'
    again = api.get(
        f"{BASE}/model-requests/{model_request.pk}/model", HTTP_IF_NONE_MATCH=response["ETag"]
    )
    assert again.status_code == 304

    signed = api.get(f"{BASE}/model-requests/{model_request.pk}/model-card").json()
    jwks = Client().get("/.well-known/dataspace/receipt-keys.json").json()
    card = verify_signed(signed, jwks, "card")
    details = card["model_details"]
    assert details["plan_hash"] == model_request.plan_hash
    assert details["spec"] == model_request.spec
    assert details["model"] == {"round": 0, "sha256": model_request.weights_sha256}
    assert card["privacy"]["secure_aggregation"]["threshold_fraction"] == 0.6
    assert card["intended_use"]["out_of_scope_uses"] == model_request.spec["out_of_scope_uses"]
    page = api.get(f"{BASE}/model-requests/{model_request.pk}/model-card.html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert model_request.spec["intended_use"] in page.content.decode()
    assert api.get(f"{BASE}/model-requests/{model_request.pk}/rounds/").json() == []


def test_cancel_then_cancel_again(api: Client, provider: Provider) -> None:
    model_request = open_request(provider=provider)
    first = api.post(f"{BASE}/model-requests/{model_request.pk}/cancel/")
    second = api.post(f"{BASE}/model-requests/{model_request.pk}/cancel/")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    assert second.status_code == 409 and error_code(second) == "request_finished"


def test_categories_list_field_schemas(api: Client) -> None:
    body = api.get(f"{BASE}/categories/").json()
    breast = next(c for c in body if c["slug"] == "health.breast_screening")
    assert breast["special_category"] is True
    assert {"name": "diagnosis", "type": "int"}.items() <= breast["fields"][-1].items()


# --- scopes and ownership ------------------------------------------------------------------------


ENDPOINTS = [
    ("get", "/categories/", "requests:read"),
    ("get", "/model-requests/", "requests:read"),
    ("get", "/model-requests/{id}/", "requests:read"),
    ("post", "/model-requests/{id}/cancel/", "requests:write"),
    ("get", "/model-requests/{id}/rounds/", "requests:read"),
    ("get", "/model-requests/{id}/model", "models:read"),
    ("get", "/model-requests/{id}/model-card", "models:read"),
    ("get", "/model-requests/{id}/model-card.html", "models:read"),
]


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_scope_matrix(
    method: str, path: str, scope: str, provider: Provider, make_token: TokenMaker
) -> None:
    model_request = open_request(provider=provider)
    url = BASE + path.format(id=model_request.pk)

    def call(token: str | None) -> Any:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return getattr(Client(), method)(url, **headers)

    # no token: 401 with a Bearer challenge
    anonymous = call(None)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert error_code(anonymous) == "not_authenticated"

    # expired token: 401, invalid_token
    expired = call(make_token(provider, scope=scope, expires_in=-10))
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired["WWW-Authenticate"]
    assert error_code(expired) == "invalid_token"

    # a token without the needed scope: 403 insufficient_scope naming the scope
    other_scopes = {"requests:read", "requests:write", "models:read"} - {scope}
    lacking = call(make_token(provider, scope=" ".join(sorted(other_scopes))))
    assert lacking.status_code == 403
    assert lacking["WWW-Authenticate"] == (
        f'Bearer realm="api", error="insufficient_scope", scope="{scope}"'
    )
    assert error_code(lacking) == "insufficient_scope"

    # a pod token never reaches provider endpoints
    pod = call(make_token(None, scope="pod"))
    assert pod.status_code == 403
    assert error_code(pod) == "insufficient_scope"

    # another provider's request does not exist for them
    if "{id}" in path:
        stranger = call(make_token(ProviderFactory(), scope=scope))
        assert stranger.status_code == 404
        assert error_code(stranger) == "not_found"

    # the right scope works
    allowed = call(make_token(provider, scope=scope))
    assert allowed.status_code == 200
    model_request.refresh_from_db()
    expected_status = "cancelled" if path.endswith("cancel/") else "recruiting"
    assert model_request.status == expected_status


def test_submit_needs_write_scope(provider: Provider, make_token: TokenMaker) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(provider, scope='requests:read')}")
    spec = demo_request_spec()
    response = submit(client, spec, demo_weights(spec))
    assert response.status_code == 403
    assert ModelRequest.objects.count() == 0


# --- bad input: each is a 4xx with a stable code, and nothing is stored ---


def _spec(**changes: Any) -> dict[str, Any]:
    spec = demo_request_spec()
    for path, value in changes.items():
        target: Any = spec
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        if value is _DELETE:
            del target[last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return spec


_DELETE = object()


def _state(**replace: torch.Tensor) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    state = dict(load(demo_weights(demo_request_spec())))
    state.update(replace)
    return state


def _weights(state: dict[str, torch.Tensor]) -> bytes:
    return bytes(save_safetensors(state))


def _zip_weights() -> bytes:
    buffer = io.BytesIO()
    torch.save(_state(), buffer)
    return buffer.getvalue()


GOOD_WEIGHTS = demo_weights(demo_request_spec())
BAD_SPECS: list[tuple[str, Any, str]] = [
    ("malformed JSON", '{"title": ', "malformed_spec"),
    ("NaN in JSON", json.dumps(demo_request_spec()).replace("0.05", "NaN"), "malformed_spec"),
    ("not an object", "[1, 2]", "malformed_spec"),
    ("unknown layer", _spec(model__layers__1={"type": "lambda"}), "unknown_layer"),
    ("unknown loss", _spec(training__loss="hinge"), "unknown_loss"),
    (
        "unknown optimizer",
        _spec(training__optimizer={"type": "lbfgs", "lr": 0.1}),
        "unknown_optimizer",
    ),
    ("unknown key", _spec(training__exec="rm -rf /"), "unknown_field"),
    (
        "shapes do not chain",
        _spec(model__layers__2={"type": "linear", "in_features": 15, "out_features": 2}),
        "shape_mismatch",
    ),
    ("rounds zero", _spec(training__rounds=0), "invalid_value"),
    ("rounds huge", _spec(training__rounds=10**9), "invalid_value"),
    ("cohort below minimum", _spec(training__min_participants=60), "invalid_value"),
    ("threshold too low", _spec(privacy__secagg_threshold=0.3), "invalid_value"),
    (
        "negative dp noise",
        _spec(
            privacy__dp={
                "clip_norm": 1.0,
                "noise_multiplier": -1,
                "target_epsilon": 8,
                "delta": 1e-5,
            }
        ),
        "invalid_value",
    ),
    (
        "dp delta one",
        _spec(
            privacy__dp={
                "clip_norm": 1.0,
                "noise_multiplier": 1.0,
                "target_epsilon": 8,
                "delta": 1.0,
            }
        ),
        "invalid_value",
    ),
    ("lr infinite", _spec(training__optimizer={"type": "sgd", "lr": 1e400}), "malformed_spec"),
]


@pytest.mark.parametrize(("name", "spec", "code"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_refused_and_nothing_stored(
    api: Client, name: str, spec: Any, code: str
) -> None:
    response = submit(api, spec, GOOD_WEIGHTS)
    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert ModelRequest.objects.count() == 0
    assert PrivacyNotice.objects.count() == 0


def test_feature_not_in_category(api: Client) -> None:
    spec = demo_request_spec()
    spec["data"]["features"][0] = "shoe size"
    response = submit(api, spec, GOOD_WEIGHTS)
    assert response.status_code == 400
    assert error_code(response) == "unknown_feature"
    assert ModelRequest.objects.count() == 0


def test_label_not_in_category(api: Client) -> None:
    spec = demo_request_spec()
    spec["data"]["label"] = "income"
    response = submit(api, spec, GOOD_WEIGHTS)
    assert error_code(response) == "unknown_label"
    assert ModelRequest.objects.count() == 0


def test_unknown_category(api: Client) -> None:
    spec = demo_request_spec()
    spec["data"]["category"] = "finance.salaries"
    response = submit(api, spec, GOOD_WEIGHTS)
    assert error_code(response) == "unknown_category"
    assert ModelRequest.objects.count() == 0


BAD_WEIGHTS: list[tuple[str, Any, str]] = [
    ("pickle", lambda: pickle.dumps({"0.weight": [1.0]}), "weights_not_safetensors"),
    ("torch zip", _zip_weights, "weights_not_safetensors"),
    ("truncated", lambda: GOOD_WEIGHTS[: len(GOOD_WEIGHTS) // 2], "weights_truncated"),
    ("header claims more", lambda: struct.pack("<Q", 10**6) + b"{}", "weights_truncated"),
    (
        "missing tensor",
        lambda: _weights({k: v for k, v in _state().items() if k != "2.bias"}),
        "weights_missing_tensor",
    ),
    (
        "unexpected tensor",
        lambda: _weights(_state(extra=torch.zeros(1))),
        "weights_unexpected_tensor",
    ),
    (
        "wrong shape",
        lambda: _weights(_state(**{"0.weight": torch.zeros(16, 29)})),
        "weights_shape_mismatch",
    ),
    (
        "wrong dtype",
        lambda: _weights(_state(**{"0.weight": torch.zeros(16, 30, dtype=torch.float64)})),
        "weights_dtype_mismatch",
    ),
    (
        "NaN",
        lambda: _weights(_state(**{"0.bias": torch.full((16,), math.nan)})),
        "weights_not_finite",
    ),
    (
        "Inf",
        lambda: _weights(_state(**{"2.bias": torch.tensor([math.inf, 0.0])})),
        "weights_not_finite",
    ),
]


@pytest.mark.parametrize(("name", "make", "code"), BAD_WEIGHTS, ids=[b[0] for b in BAD_WEIGHTS])
def test_bad_weights_are_refused_and_nothing_stored(
    api: Client, name: str, make: Any, code: str
) -> None:
    response = submit(api, demo_request_spec(), make())
    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert ModelRequest.objects.count() == 0
    assert not default_storage.exists("requests")


def test_weights_over_the_size_limit(api: Client, settings: Any) -> None:
    settings.MODEL_MAX_WEIGHTS_BYTES = 1000
    response = submit(api, demo_request_spec(), GOOD_WEIGHTS)
    assert response.status_code == 413
    assert error_code(response) == "weights_too_large"
    assert ModelRequest.objects.count() == 0


def test_missing_parts(api: Client) -> None:
    no_weights = api.post(f"{BASE}/model-requests/", {"spec": json.dumps(demo_request_spec())})
    no_spec = api.post(f"{BASE}/model-requests/", {"weights": io.BytesIO(GOOD_WEIGHTS)})
    as_json = api.post(
        f"{BASE}/model-requests/", demo_request_spec(), content_type="application/json"
    )
    assert (no_weights.status_code, error_code(no_weights)) == (400, "missing_weights")
    assert (no_spec.status_code, error_code(no_spec)) == (400, "missing_spec")
    assert (as_json.status_code, error_code(as_json)) == (415, "unsupported_media_type")
    assert ModelRequest.objects.count() == 0


def test_plan_is_immutable_once_recruiting(provider: Provider) -> None:
    from django.core.exceptions import ValidationError

    model_request = open_request(provider=provider)
    model_request.spec = copy.deepcopy(model_request.spec) | {"title": "changed"}
    with pytest.raises(ValidationError, match="immutable"):
        model_request.save()


def test_scaffold_is_accepted_and_refused_only_with_differential_privacy() -> None:
    """The live rounds run SCAFFOLD (the service's c travels with the weights, each pod's
    Δc_i in the masked sum); with DP it is refused — Δc_i would leave the pod without noise."""
    from dataspace.errors import DomainError
    from tests.factories import breast_category
    from training.services import model_request_create

    breast_category()
    spec = demo_request_spec(rounds=1, cohort_size=4, min_participants=4)
    spec["training"]["algorithm"] = {"type": "scaffold"}
    weights = demo_weights(spec)
    created = model_request_create(provider=ProviderFactory(), spec=spec, weights=weights)
    assert created.spec["training"]["algorithm"] == {"type": "scaffold"}
    dp = {"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5, "target_epsilon": 8.0}
    spec = demo_request_spec(rounds=1, cohort_size=4, min_participants=4, dp=dp)
    spec["training"]["algorithm"] = {"type": "scaffold"}
    before = ModelRequest.objects.count()
    with pytest.raises(DomainError) as refused:
        model_request_create(provider=ProviderFactory(), spec=spec, weights=weights)
    assert refused.value.code == "invalid_value"
    assert "training.algorithm.type" in refused.value.fields
    assert ModelRequest.objects.count() == before
