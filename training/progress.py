"""Live progress of a model request, published over the channel layer.

The rounds engine calls :func:`publish` whenever a round changes stage, completes or aborts, and
when the request itself changes status. Subscribers (the portal's request page, the provider's
``watch``) join :func:`dataspace.delivery.request_group` and receive
``{"type": "progress.event", "event": {...}}``.
An event carries only what the request page already shows: no key, share or update.

Event fields: ``request`` (uuid string), ``status`` (the request's status), ``round`` (number or
null), ``attempt``, ``stage`` (the round's status: advertising, sharing, collecting, unmasking,
completed, aborted), ``cohort``, ``survivors`` (null until known), ``metrics`` (the round's
public metrics: eval_loss, eval_accuracy, participants, epsilon when DP), ``at`` (ISO time).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from dataspace import delivery
from pods.agent.protocol import PUBLIC_METRICS

from .models import ModelRequest, TrainingRound


def round_event(training_round: TrainingRound, request_status: str) -> dict[str, Any]:
    metrics = {
        k: training_round.metrics.get(k) for k in PUBLIC_METRICS if k in training_round.metrics
    }
    if training_round.epsilon is not None:
        metrics["epsilon"] = training_round.epsilon
    return {
        "request": str(training_round.model_request_id),
        "status": request_status,
        "round": training_round.number,
        "attempt": training_round.attempt,
        "stage": str(training_round.status),
        "cohort": training_round.cohort_size,
        "survivors": training_round.survivors,
        "metrics": metrics,
        "at": timezone.now().isoformat(),
    }


def request_event(model_request: ModelRequest) -> dict[str, Any]:
    """The latest round as :func:`round_event`, or the request alone before round 1."""
    latest = model_request.rounds_run.order_by("-number", "-attempt").first()
    if latest is not None:
        return round_event(latest, str(model_request.status))
    return {
        "request": str(model_request.pk),
        "status": str(model_request.status),
        "round": None,
        "attempt": None,
        "stage": None,
        "cohort": None,
        "survivors": None,
        "metrics": {},
        "at": timezone.now().isoformat(),
    }


def send(request_id: uuid.UUID | str, event: dict[str, Any]) -> None:
    """Send now (tests use it to push an event to a live watcher)."""
    delivery.dispatch(
        delivery.request_group(request_id), {"type": "progress.event", "event": event}
    )


def publish(request_id: uuid.UUID | str, event: dict[str, Any]) -> None:
    """Send ``event`` once the current transaction commits."""
    delivery.to_watchers(request_id, event)
