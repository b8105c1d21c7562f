"""Training reads, scoped to the provider that asks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from consent.services import notice_plan_hash
from pods.models import Pod

from .models import ModelRequest, ModelVersion, Provider, RoundParticipant, TrainingRound


def round_weights_for(*, pod: Pod, round_id: int) -> ModelVersion | None:
    """The global weights a round trains from, for a pod in that round's cohort (else None)."""
    participant = (
        RoundParticipant.objects.select_related("round__base_version")
        .filter(round_id=round_id, pod=pod)
        .first()
    )
    return participant.round.base_version if participant is not None else None


def model_requests_of(provider: Provider) -> QuerySet[ModelRequest]:
    return ModelRequest.objects.filter(provider=provider).select_related("data_category")


def model_version_latest(model_request: ModelRequest) -> ModelVersion:
    version = model_request.versions.order_by("-round_number").first()
    assert version is not None, "every request has version 0, its initial weights"
    return version


def model_card(model_request: ModelRequest) -> dict[str, Any]:
    """What a trained model is: its plan, every round, participation, metrics and privacy."""
    rounds = list(
        TrainingRound.objects.filter(model_request=model_request).order_by("number", "attempt")
    )
    latest = model_version_latest(model_request)
    completed = [r for r in rounds if r.status == TrainingRound.Status.COMPLETED]
    return {
        "model_request": str(model_request.pk),
        "title": model_request.title,
        "purpose": model_request.purpose,
        "provider": model_request.provider.name,
        "status": model_request.status,
        "plan_hash": model_request.plan_hash,
        # Every notice version people could read, per language: a receipt names one of these
        # hashes, and its plan hash is this notice's (the request's own for English).
        "notices": [
            {
                "language": notice.language,
                "version": notice.version,
                "hash": notice.content_hash,
                "plan_hash": notice_plan_hash(model_request, notice),
            }
            for notice in model_request.notices.order_by("language", "version")
        ],
        "spec": model_request.spec,
        "initial_weights_sha256": model_request.weights_sha256,
        "model": {"round": latest.round_number, "sha256": latest.sha256},
        "rounds": [
            {
                "number": r.number,
                "attempt": r.attempt,
                "status": r.status,
                "participants": r.survivors,
                "cohort_size": r.cohort_size,
                "metrics": r.metrics,
                "epsilon": r.epsilon,
            }
            for r in rounds
        ],
        "participants_per_round": [r.survivors for r in completed],
        "metrics": completed[-1].metrics if completed else {},
        "privacy": {
            "secure_aggregation": {
                "protocol": "SecAgg+ (Bell et al. 2020)",
                "threshold": model_request.secagg_threshold,
                "min_participants": model_request.min_participants,
            },
            "differential_privacy": model_request.dp,
            "epsilon_spent": model_request.epsilon_spent if model_request.dp else None,
        },
    }
