"""Bulk HTTP for pods: round weights (ETag) and masked-input uploads (exact, checked, once)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.services import consent_grant, consent_withdraw
from pods.models import Pod
from tests.factories import open_request
from tests.pods.conftest import PairedPod, make_paired_pod
from training import downloads
from training.models import ModelVersion, RoundParticipant, TrainingRound

pytestmark = pytest.mark.django_db

VECTOR = 40


@pytest.fixture
def collecting() -> tuple[TrainingRound, PairedPod]:
    model_request = open_request()
    training_round = TrainingRound.objects.create(
        model_request=model_request,
        number=1,
        status=TrainingRound.Status.COLLECTING,
        vector_length=VECTOR,
        base_version=ModelVersion.objects.get(model_request=model_request, round_number=0),
    )
    paired = make_paired_pod()
    consent_grant(user=paired.pod.owner, model_request=model_request, pod=paired.pod)
    RoundParticipant.objects.create(
        round=training_round,
        pod=paired.pod,
        user=paired.pod.owner,
        index=1,
        stage_reached=RoundParticipant.Stage.SHARED,
    )
    return training_round, paired


def put(client: Client, round_id: int, token: str, body: bytes, sha: str | None = None) -> Any:
    return client.generic(
        "PUT",
        f"/api/v1/pod/rounds/{round_id}/masked-input",
        body,
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_X_CONTENT_SHA256=sha if sha is not None else hashlib.sha256(body).hexdigest(),
    )


def vector() -> bytes:
    return np.arange(VECTOR, dtype="<u4").tobytes()


def test_upload_once_then_refused(
    client: Client, collecting: tuple[TrainingRound, PairedPod]
) -> None:
    training_round, paired = collecting
    body = vector()
    first = put(client, training_round.pk, paired.token, body)
    second = put(client, training_round.pk, paired.token, body)
    assert first.status_code == 201, first.content
    assert first.json() == {"sha256": hashlib.sha256(body).hexdigest()}
    participant = RoundParticipant.objects.get()
    assert participant.stage_reached == "masked_input"
    assert participant.masked_input.read() == body
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "already_uploaded"


@pytest.mark.parametrize(
    ("body", "sha", "code"),
    [
        (vector()[:-4], None, "wrong_length"),
        (vector() + b"\0\0\0\0", None, "wrong_length"),
        (vector(), "0" * 64, "checksum_mismatch"),
        (vector(), "", "missing_checksum"),
    ],
)
def test_bad_uploads_store_nothing(
    client: Client,
    collecting: tuple[TrainingRound, PairedPod],
    body: bytes,
    sha: str | None,
    code: str,
) -> None:
    training_round, paired = collecting
    response = put(client, training_round.pk, paired.token, body, sha)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    participant = RoundParticipant.objects.get()
    assert not participant.masked_input
    assert participant.stage_reached == "share_keys"


def test_outsider_and_wrong_stage_are_refused(
    client: Client, collecting: tuple[TrainingRound, PairedPod]
) -> None:
    training_round, _ = collecting
    outsider = make_paired_pod()
    assert put(client, training_round.pk, outsider.token, vector()).status_code == 404
    TrainingRound.objects.filter(pk=training_round.pk).update(status=TrainingRound.Status.UNMASKING)
    _, paired = collecting
    late = put(client, training_round.pk, paired.token, vector())
    assert late.status_code == 409 and late.json()["error"]["code"] == "wrong_stage"


def test_provider_token_cannot_upload(
    client: Client, collecting: tuple[TrainingRound, PairedPod]
) -> None:
    training_round, _ = collecting
    provider_like = make_paired_pod(scope="requests:read")
    response = put(client, training_round.pk, provider_like.token, vector())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_round_weights_with_etag(
    client: Client, collecting: tuple[TrainingRound, PairedPod]
) -> None:
    training_round, paired = collecting
    url = f"/api/v1/pod/rounds/{training_round.pk}/weights"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {paired.token}"}
    response = client.get(url, **auth)
    body = response.getvalue()  # in memory: one piece, not streamed
    assert response.status_code == 200
    assert response["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert client.get(url, HTTP_IF_NONE_MATCH=response["ETag"], **auth).status_code == 304
    outsider = make_paired_pod()
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {outsider.token}").status_code == 404


def test_withdrawn_consent_refuses_the_upload(
    client: Client, collecting: tuple[TrainingRound, PairedPod]
) -> None:
    training_round, paired = collecting
    consent = paired.pod.consents.get()
    consent_withdraw(user=paired.pod.owner, consent=consent)
    response = put(client, training_round.pk, paired.token, vector())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "consent_withdrawn"
    assert not RoundParticipant.objects.get().masked_input


def test_round_weights_are_read_from_storage_once_per_process(
    client: Client, collecting: tuple[TrainingRound, PairedPod]
) -> None:
    """A cohort downloads one immutable object (keyed by the version and its hash)."""
    training_round, paired = collecting
    url = f"/api/v1/pod/rounds/{training_round.pk}/weights"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {paired.token}"}
    first = client.get(url, **auth).getvalue()
    version = training_round.base_version
    assert version is not None
    version.weights.storage.delete(version.weights.name)  # only the cached copy is left
    again = client.get(url, **auth)
    assert again.status_code == 200
    assert again.getvalue() == first
    assert again["Content-Length"] == str(len(first))


@pytest.fixture
def bound() -> Any:
    """Tokens bound to a live channel in this process, unbound afterwards."""
    from pods import live_tokens

    channels: list[str] = []

    def bind(paired: PairedPod, seconds: int = 600) -> None:
        channel = f"test-channel-{len(channels)}"
        channels.append(channel)
        expires = timezone.now() + timedelta(seconds=seconds)
        live = live_tokens.LivePod(str(paired.pod.pk), expires, channel)
        live_tokens.bind(live_tokens.checksum(paired.token), live)

    yield bind
    for channel in channels:
        live_tokens.unbind(channel)


def _token_lookups(queries: CaptureQueriesContext) -> int:
    return sum("oauth2_provider_accesstoken" in q["sql"] for q in queries.captured_queries)


def test_a_live_channel_s_token_uploads_without_a_token_lookup(
    client: Client, collecting: tuple[TrainingRound, PairedPod], bound: Any
) -> None:
    training_round, paired = collecting
    bound(paired)
    with CaptureQueriesContext(connection) as queries:
        response = put(client, training_round.pk, paired.token, vector())
    assert response.status_code == 201
    assert _token_lookups(queries) == 0
    url = f"/api/v1/pod/rounds/{training_round.pk}/weights"
    with CaptureQueriesContext(connection) as queries:
        weights = client.get(url, HTTP_AUTHORIZATION=f"Bearer {paired.token}")
    assert weights.status_code == 200
    assert _token_lookups(queries) == 0


def test_a_live_channel_binds_its_own_pod_only_while_active_and_unexpired(
    client: Client, collecting: tuple[TrainingRound, PairedPod], bound: Any
) -> None:
    training_round, paired = collecting
    outsider = make_paired_pod()
    bound(outsider)
    refused = put(client, training_round.pk, outsider.token, vector())
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_in_round"
    weights = f"/api/v1/pod/rounds/{training_round.pk}/weights"
    assert client.get(weights, HTTP_AUTHORIZATION=f"Bearer {outsider.token}").status_code == 404
    # Revoked while its connection was still being closed: the round's queries refuse it.
    bound(paired)
    Pod.objects.filter(pk=paired.pod.pk).update(status=Pod.Status.REVOKED)
    assert put(client, training_round.pk, paired.token, vector()).status_code == 409
    assert client.get(weights, HTTP_AUTHORIZATION=f"Bearer {paired.token}").status_code == 404
    assert not RoundParticipant.objects.get().masked_input
    # An expired binding is no binding: the token table answers (the token is still valid).
    Pod.objects.filter(pk=paired.pod.pk).update(status=Pod.Status.ACTIVE)
    bound(paired, seconds=-1)
    with CaptureQueriesContext(connection) as queries:
        assert put(client, training_round.pk, paired.token, vector()).status_code == 201
    assert _token_lookups(queries) >= 1


def test_a_download_does_not_touch_a_handle_another_request_holds(
    collecting: tuple[TrainingRound, PairedPod],
) -> None:
    """A version is shared by the process's request threads: a download reads through a handle
    of its own, never the field's one (which another thread may be reading)."""
    training_round, _ = collecting
    version = training_round.base_version
    assert version is not None
    downloads._cache.clear()
    held = version.weights.open("rb")  # what another request thread holds mid-read
    held.seek(0)
    prefix = held.read(8)
    blob = downloads._cached(version.weights, version.sha256)
    assert blob is not None and blob[:8] == prefix
    assert not held.closed
    held.seek(0)
    assert held.read(8) == prefix
    held.close()
