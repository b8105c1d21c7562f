"""Training reads, scoped to the provider that asks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from consent.services import notice_plan_hash
from pods.models import Pod

from .models import ModelRequest, ModelVersion, Provider, RoundParticipant
from .shared.kept import Kept


def round_weights_for(*, pod: Pod, round_id: int) -> ModelVersion | None:
    """The global weights a round trains from, for a pod in that round's cohort (else None).

    One small query per download (a round's whole cohort asks); the version itself, which
    never changes once stored, is kept per process."""
    found = list(
        RoundParticipant.objects.filter(round_id=round_id, pod=pod, pod__status=Pod.Status.ACTIVE)
        .order_by()
        .values_list(
            "round__base_version_id",
            "round__base_version__sha256",
            "round__base_version__weights",
        )[:1]
    )
    if not found or found[0][0] is None:
        return None
    return _model_version(found[0])


# Versions by (id, weights' SHA-256, file name): a stored version's weights, hashes and
# control variate never change; the key never matches a row made again under the same id.
_VERSIONS: Kept[tuple[int, str, str], ModelVersion] = Kept(16)


def _model_version(key: tuple[int, str, str]) -> ModelVersion:
    version = _VERSIONS.get(key)
    if version is None:
        version = _VERSIONS.put(key, ModelVersion.objects.get(pk=key[0]))
    return version


def model_requests_of(provider: Provider) -> QuerySet[ModelRequest]:
    return ModelRequest.objects.filter(provider=provider).select_related("data_category")


def model_version_latest(model_request: ModelRequest) -> ModelVersion:
    version = model_request.versions.order_by("-round_number").first()
    assert version is not None, "every request has version 0, its initial weights"
    return version


def notice_versions(model_request: ModelRequest) -> list[dict[str, Any]]:
    """Every notice version people could read, per language: a receipt names one of these
    hashes, and its plan hash is this notice's (the request's own for the default language)."""
    return [
        {
            "language": notice.language,
            "version": notice.version,
            "hash": notice.content_hash,
            "plan_hash": notice_plan_hash(model_request, notice),
        }
        for notice in model_request.notices.order_by("language", "version")
    ]
