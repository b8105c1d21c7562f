"""Training reads, scoped to the provider that asks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from consent.services import notice_plan_hash
from pods.models import Pod

from .models import ModelRequest, ModelVersion, Provider, RoundParticipant


def round_weights_for(*, pod: Pod, round_id: int) -> ModelVersion | None:
    """The global weights a round trains from, for a pod in that round's cohort (else None)."""
    participant = (
        RoundParticipant.objects.select_related("round__base_version")
        # One of a cohort's downloads: not the round's protocol state nor its metrics.
        .defer("reply", "round__secagg_state", "round__metrics")
        .filter(round_id=round_id, pod=pod, pod__status=Pod.Status.ACTIVE)
        .first()
    )
    return participant.round.base_version if participant is not None else None


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
