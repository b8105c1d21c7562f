"""Training reads, scoped to the provider that asks."""

from __future__ import annotations

from django.db.models import QuerySet

from pods.models import Pod

from .models import ModelRequest, ModelVersion, Provider, RoundParticipant


def round_weights_for(*, pod: Pod, round_id: int) -> ModelVersion | None:
    """The global weights a round trains from, for a pod in that round's cohort (else None)."""
    participant = (
        RoundParticipant.objects.select_related("round__base_version")
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
