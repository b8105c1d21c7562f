"""Opening rounds: draw a cohort, create the round and its protocol state, ask the first stage."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dataspace import delivery
from pods.agent.protocol import bind_task
from training.models import ModelRequest, RoundParticipant, RoundStatus, TrainingRound
from training.modelspec import validate_spec
from training.secagg.server import ServerRound

from .cohort import eligible_pods, enough_consents
from .locking import lock_request
from .messages import StageParts, layout_for, stage_message, stage_opened
from .progress import round_changed
from .resending import ASKED_AT
from .transitions import FINISHED_STATUSES, STEPS
from .valuation import candidates_of, round_groups


@transaction.atomic
def round_open(
    model_request: ModelRequest, *, number: int, attempt: int, now: datetime
) -> TrainingRound | None:
    """Draw a cohort at random from eligible pods and start AdvertiseKeys, or wait (None).

    The caller holds the request's lock; a round of that number and attempt is opened once.
    """
    if model_request.rounds_run.filter(number=number, attempt=attempt).exists():
        return None  # opened meanwhile by another path (the clock, or a retry after commit)
    if not enough_consents(model_request, now):
        return None
    pool = eligible_pods(model_request, now)
    if len(pool) < model_request.min_participants:
        return None
    cohort = random.SystemRandom().sample(pool, min(model_request.cohort_size, len(pool)))
    base = model_request.versions.order_by("-round_number").first()
    # Group value: the last round's candidates (its model without one group each) are
    # evaluated by this round's pods, in extra parts of the masked vector.
    layout = layout_for(model_request, len(cohort), candidates=len(candidates_of(base)))
    first = STEPS[RoundStatus.ADVERTISING]
    training_round = TrainingRound.objects.create(
        model_request=model_request,
        number=number,
        attempt=attempt,
        status=first.status,
        cohort_size=len(cohort),
        vector_length=layout.length,
        base_version=base,
        stage_deadline=now + timedelta(seconds=settings.ROUND_STAGE_SECONDS),
        # The training seed is public (pods train deterministically; anyone may reproduce).
        metrics={
            "sample_rate": len(cohort) / len(pool),
            "seed": random.SystemRandom().randrange(2**31),
            ASKED_AT: now.isoformat(),
        },
    )
    participants = RoundParticipant.objects.bulk_create(
        RoundParticipant(round=training_round, pod=pod, user_id=pod.owner_id, index=index)
        for index, pod in enumerate(sorted(cohort, key=lambda p: str(p.pk)), start=1)
    )
    keys = {p.pk: bytes(p.public_key) for p in cohort}
    groups = round_groups(model_request, validate_spec(model_request.spec), participants)
    if groups:
        training_round.metrics = {
            **training_round.metrics,
            "group_labels": [g.label for g in groups],
        }
        training_round.save(update_fields=["metrics"])
    parts = StageParts(training_round, first, participants)
    assert parts.task is not None
    server = ServerRound(
        # The model, seed and candidates bound into the id: pods given different ones cannot
        # verify each other (pods.agent.protocol.bind_task).
        round_id=bind_task(f"{model_request.pk}/{number}/{attempt}", parts.task),
        identity_keys={p.index: keys[p.pod_id] for p in participants},
        threshold_fraction=model_request.secagg_threshold,
        min_survivors=model_request.min_participants,
        layout=layout,
        groups=[g.members for g in groups] or None,
    )
    training_round.secagg_state = server.to_dict()
    training_round.save(update_fields=["secagg_state"])
    round_changed(training_round, ModelRequest.Status.TRAINING)
    delivery.to_pods(
        (p.pod_id, stage_message(training_round, server, p.index, first, parts))
        for p in participants
    )
    stage_opened(training_round, server, parts)
    return training_round


@transaction.atomic
def request_try_start(
    model_request: ModelRequest, now: datetime | None = None
) -> TrainingRound | None:
    """recruiting → training once enough pods with a usable consent are online."""
    now = now or timezone.now()
    locked = lock_request(model_request.pk)
    if locked.status != ModelRequest.Status.RECRUITING:
        return None
    training_round = round_open(locked, number=1, attempt=1, now=now)
    if training_round is not None:
        locked.move_to(ModelRequest.Status.TRAINING, now=now)
        locked.save(update_fields=["status", "updated_at"])
    return training_round


def reopen(request_id: uuid.UUID, number: int, attempt: int) -> None:
    """Open round ``number``/``attempt`` of a request still training (after commit of the
    round before it, or of an abort)."""
    with transaction.atomic():
        model_request = lock_request(request_id)
        if model_request.status == ModelRequest.Status.TRAINING:
            round_open(model_request, number=number, attempt=attempt, now=timezone.now())


def resume(model_request: ModelRequest, now: datetime) -> None:
    """Open the round a training request is waiting for (its next number, or a retry)."""
    with transaction.atomic():
        locked = lock_request(model_request.pk)
        if locked.status != ModelRequest.Status.TRAINING:
            return
        last = locked.rounds_run.order_by("-number", "-attempt").first()
        if last is not None and last.status not in FINISHED_STATUSES:
            return
        if last is None or last.status == RoundStatus.COMPLETED:
            number, attempt = (last.number + 1 if last else 1), 1
        else:
            number, attempt = last.number, last.attempt + 1
        if number > locked.rounds:
            return
        round_open(locked, number=number, attempt=attempt, now=now)
