"""Lock order as code: the round (with its request's row), then its participants by index.

Every write path of the engine that takes more than one of these locks takes them through these
functions, in this order, so two processes can never wait on each other (the pattern of
Saleor's ``lock_objects``). Call them inside ``transaction.atomic``.
"""

from __future__ import annotations

import uuid

from training.models import ModelRequest, RoundParticipant, TrainingRound
from training.secagg.server import ServerRound

# A participant's round and request as the per-message paths read them (select_related): the
# round's protocol state and the plan's JSON left out (``.defer(*ROUND_STATE)``).
ROUND_STATE = (
    "round__secagg_state",
    "round__metrics",
    "round__model_request__spec",
    "round__model_request__features",
    "round__model_request__dp",
)


def lock_request(request_id: uuid.UUID | str) -> ModelRequest:
    """A request alone (opening a round, finishing one); never taken while holding a
    participant's lock."""
    return ModelRequest.objects.select_for_update().get(pk=request_id)


def lock_round(round_id: int) -> tuple[TrainingRound, ServerRound | None]:
    """The round and its request, locked in one statement, and its protocol state if any."""
    training_round = (
        TrainingRound.objects.select_for_update().select_related("model_request").get(pk=round_id)
    )
    state = training_round.secagg_state
    return training_round, ServerRound.from_dict(state) if state else None


def lock_round_row(round_id: int, *fields: str) -> TrainingRound | None:
    """The round's row alone (only ``fields``, its status by default), for the per-answer and
    per-shard paths that need nothing else."""
    return (
        TrainingRound.objects.select_for_update()
        .only(*(fields or ("status",)))
        .filter(pk=round_id)
        .first()
    )


def lock_participants(training_round: TrainingRound) -> list[RoundParticipant]:
    """The round's participants with their pods' status (the rest of the pod row is not read:
    a close reads every participant's), locked by index (after the round)."""
    return list(
        RoundParticipant.objects.select_for_update(of=("self",))
        .filter(round=training_round)
        .select_related("pod")
        .only(*PARTICIPANT_FIELDS, "pod__status")
        .order_by("index")
    )


# Every column of a participant's row (the pod's: its status alone, lock_participants).
PARTICIPANT_FIELDS = tuple(f.name for f in RoundParticipant._meta.concrete_fields)
