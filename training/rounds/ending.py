"""How a pod leaves a round, and how a round ends without a model: drop, discard, abort, retry."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction

from dataspace import delivery
from dataspace.rows import update_rows
from pods.agent.protocol import RoundEnd
from training.models import ModelRequest, RoundParticipant, RoundStatus, TrainingRound

from . import opening, valuation
from .files import MASKED_DIR, delete_input_on_commit, remove_round_dir
from .locking import lock_request
from .messages import round_end
from .progress import round_changed


def drop(participant: RoundParticipant, stage: str, reason: str) -> None:
    """Take a pod out of its round at ``stage``; its pending answer is forgotten. Idempotent."""
    if not participant.dropped:
        participant.dropped_at_stage = stage
        participant.drop_reason = reason[:100]
        participant.reply = None
        participant.save(update_fields=["dropped_at_stage", "drop_reason", "reply"])


def decline_reason(code: str) -> str:
    """The recorded drop reason of a pod that declined its task (read back by
    :meth:`training.models.RoundParticipant.declined_because`)."""
    return f"{RoundParticipant.DECLINED_PREFIX}{code}"


def discard_input(participant: RoundParticipant) -> None:
    """Delete a pod's stored masked input (after aggregation, an abort, or a drop before
    collection closed — then it stays out of the sum like a pre-mask dropout's)."""
    if participant.masked_input:
        delete_input_on_commit(participant.masked_input.name)
        participant.masked_input = ""
        participant.save(update_fields=["masked_input"])


def end_round(
    training_round: TrainingRound,
    participants: list[RoundParticipant],
    end: RoundEnd,
    now: datetime,
) -> None:
    """Record a round's end (its protocol state and every masked input discarded) and tell
    its pods. The round's input files go after the commit, with any an upload killed before
    its commit left behind."""
    training_round.status = RoundStatus(end.value)
    training_round.finished_at = now
    training_round.secagg_state = {}
    training_round.save()
    stored = [p for p in participants if p.masked_input]
    for p in stored:
        p.masked_input = ""
    update_rows(stored, ["masked_input"])
    round_id = training_round.pk
    transaction.on_commit(lambda: remove_round_dir(MASKED_DIR, round_id))
    delivery.to_pods((p.pod_id, round_end(training_round.pk, end)) for p in participants)


def abort(
    training_round: TrainingRound,
    participants: list[RoundParticipant],
    stage: str,
    reason: str,
    now: datetime,
) -> None:
    """End a round without revealing anything; retry it with a fresh cohort, a bounded number
    of times, unless the request stopped meanwhile."""
    training_round.status_reason = reason
    end_round(training_round, participants, RoundEnd.ABORTED, now)
    model_request = lock_request(training_round.model_request_id)
    if model_request.status == ModelRequest.Status.TRAINING:
        if training_round.attempt >= settings.ROUND_MAX_ATTEMPTS:
            model_request.move_to(
                ModelRequest.Status.FAILED,
                now=now,
                reason=(
                    f"Round {training_round.number} aborted {training_round.attempt} times: "
                    f"{reason}"
                ),
            )
            model_request.save()
            request_id = model_request.pk
            transaction.on_commit(lambda: valuation.forget_candidates(request_id))
        else:
            number, attempt = training_round.number, training_round.attempt + 1
            transaction.on_commit(lambda: opening.reopen(model_request.pk, number, attempt))
    # A cancelled request is left as it is: nothing to retry, nothing to overwrite.
    round_changed(training_round, model_request.status)
