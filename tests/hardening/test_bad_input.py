"""Every bad input is a clear 4xx and writes nothing (issue 13): deep JSON, NUL characters,
huge path integers, and no weights file left behind by a refused submission."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from django.db import DataError
from django.test import Client
from django.urls import Resolver404, resolve

from dataspace.demo import demo_request_spec, demo_weights
from pods.models import PairingIntent, Pod
from tests.factories import UserFactory
from tests.pods.conftest import make_paired_pod
from training.models import ModelRequest, ModelVersion, Provider

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads


def error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}
    return dict(body["error"])


def files_under(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()]


def submit(client: Client, spec_text: str, weights: bytes) -> Any:
    return client.post(
        "/api/v1/model-requests/", {"spec": spec_text, "weights": io.BytesIO(weights)}
    )


# --- provider API -----------------------------------------------------------------------------


def test_deep_json_spec_is_a_400_and_nothing_is_written(
    api: Client, provider: Provider, settings: Any
) -> None:
    spec = demo_request_spec()
    response = submit(api, DEEP, demo_weights(spec))
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_too_deep"
    assert ModelRequest.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT) == []


@pytest.mark.parametrize("field", ["title", "purpose"])
def test_nul_in_title_or_purpose_is_a_400_and_no_orphan_weights(
    api: Client, provider: Provider, settings: Any, field: str
) -> None:
    spec = demo_request_spec()
    weights = demo_weights(spec)
    spec[field] = "Breast\x00screening"
    response = submit(api, json.dumps(spec), weights)
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_nul"
    assert ModelRequest.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT) == []


def test_nul_in_category_slug_is_a_400(api: Client, provider: Provider, settings: Any) -> None:
    spec = demo_request_spec()
    weights = demo_weights(spec)
    spec["data"]["category"] = "health.\x00breast"
    response = submit(api, json.dumps(spec), weights)
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_nul"
    assert ModelRequest.objects.count() == 0


def test_deep_safetensors_header_is_refused_as_not_safetensors(
    api: Client, provider: Provider, settings: Any
) -> None:
    spec = demo_request_spec()
    header = ('{"w": ' + "[" * 50_000 + "]" * 50_000 + "}").encode()
    weights = struct.pack("<Q", len(header)) + header
    response = submit(api, json.dumps(spec), weights)
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "weights_not_safetensors"
    assert ModelRequest.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT) == []


def test_a_database_failure_after_the_weights_were_written_leaves_no_file(
    api: Client, provider: Provider, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any failure between writing the file and the commit (here: the notice insert) must take
    # the file with it, or repeated 64 MiB submissions fill the disk with orphans.
    def failing_notice(**kwargs: Any) -> Any:
        raise DataError("simulated failure after the file was written")

    monkeypatch.setattr("training.services.notice_publish", failing_notice)
    spec = demo_request_spec()
    client = Client(
        HTTP_AUTHORIZATION=api.defaults["HTTP_AUTHORIZATION"], raise_request_exception=False
    )
    response = submit(client, json.dumps(spec), demo_weights(spec))
    assert response.status_code == 500
    assert ModelRequest.objects.count() == 0
    assert ModelVersion.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT) == []


# --- pod API ----------------------------------------------------------------------------------


def test_deep_json_on_unauthenticated_pairing_is_a_400() -> None:
    response = Client().post("/api/v1/pod/pairing/", DEEP, content_type="application/json")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_too_deep"
    assert PairingIntent.objects.count() == 0


def test_nul_in_pairing_device_code_is_a_400() -> None:
    # On PostgreSQL the device-grant lookup itself would fail on the NUL (a 500).
    body = {"device_code": "abc\x00", "name": "pod", "public_key": "AA==", "signature": "AA=="}
    response = Client().post("/api/v1/pod/pairing/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_nul"


def test_form_encoded_pairing_is_refused_not_parsed() -> None:
    response = Client().post("/api/v1/pod/pairing/", {"device_code": "x", "name": "a\x00"})
    assert response.status_code == 415, response.content
    assert error(response)["code"] == "unsupported_media_type"


def test_deep_json_pod_report_is_a_400_and_nothing_changes(transactional_db: Any) -> None:
    paired = make_paired_pod()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {paired.token}")
    before = Pod.objects.get(pk=paired.pod.pk).categories_held
    deep = '{"categories": ' + "[" * 10_000 + "]" * 10_000 + "}"
    response = client.post("/api/v1/pod/me/report/", deep, content_type="application/json")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_too_deep"
    nul = {"categories": [{"slug": "health.breast_screening", "count": 5}], "agent_version": "\x00"}
    response = client.post("/api/v1/pod/me/report/", nul, content_type="application/json")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "json_nul"
    assert Pod.objects.get(pk=paired.pod.pk).categories_held == before


@pytest.mark.parametrize("round_id", ["99999999999999999999", "9223372036854775808", "0"])
@pytest.mark.parametrize("tail", ["weights", "masked-input"])
def test_huge_round_ids_are_a_404(transactional_db: Any, round_id: str, tail: str) -> None:
    paired = make_paired_pod()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {paired.token}")
    url = f"/api/v1/pod/rounds/{round_id}/{tail}"
    response = client.get(url) if tail == "weights" else client.put(url, b"\x00" * 4)
    assert response.status_code == 404, response.content


@pytest.mark.parametrize("round_id", ["99999999999999999999", "9223372036854775808", "0"])
def test_round_ids_outside_bigint_do_not_resolve(round_id: str) -> None:
    # Refused by the URL resolver, on every database (SQLite raised OverflowError in the ORM).
    with pytest.raises(Resolver404):
        resolve(f"/api/v1/pod/rounds/{round_id}/weights")
    assert resolve("/api/v1/pod/rounds/9223372036854775807/weights").kwargs == {
        "round_id": 2**63 - 1
    }


def test_largest_round_id_is_a_clean_404(transactional_db: Any) -> None:
    paired = make_paired_pod()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {paired.token}")
    response = client.get("/api/v1/pod/rounds/9223372036854775807/weights")
    assert response.status_code == 404
    assert error(response)["code"] == "not_in_round"


# --- portal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_nul_in_a_portal_pairing_code_is_refused_not_a_500(decision: str) -> None:
    client = Client()
    client.force_login(UserFactory())
    response = client.post("/pods/pair/decide/", {"code": "AB\x00CD", "decision": decision})
    assert response.status_code == 302
    assert response["Location"] == "/pods/pair/"
    assert Pod.objects.count() == 0
    response = client.get("/pods/pair/", {"code": "AB\x00CD"})
    assert response.status_code == 400


def test_report_refuses_non_text_version_and_overlong_slugs(transactional_db: Any) -> None:
    paired = make_paired_pod()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {paired.token}")
    before = Pod.objects.get(pk=paired.pod.pk)
    for body in (
        {"categories": [], "agent_version": {}},
        {"categories": [{"slug": "x" * 101, "count": 1}]},
    ):
        response = client.post("/api/v1/pod/me/report/", body, content_type="application/json")
        assert response.status_code == 400, response.content
    after = Pod.objects.get(pk=paired.pod.pk)
    assert (after.categories_held, after.agent_version) == (
        before.categories_held,
        before.agent_version,
    )


@pytest.mark.parametrize(
    "path", ["/api/v1/model-requests/not-a-uuid/", "/api/v1/nothing-here", "/o/authorize/"]
)
def test_unmatched_api_paths_answer_in_the_json_error_shape(api: Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert error(response)["code"] == "not_found"
