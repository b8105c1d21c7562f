"""A pod's answers: stage replies over the channel, declines, leaving (masked inputs: uploads).

Each answer waits in the pod's participant row until its stage closes
(:func:`training.rounds.closing.round_advance`). Stage replies come in batches
(:func:`round_replies`): per batch and round, the round row locked once, one read, one update,
one check whether all have answered — plain statements made once (``statements``), not ORM
queries built per batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from dataspace import delivery
from dataspace.rows import update_rows
from pods.agent.protocol import RoundEnd
from pods.models import Pod
from training.models import ModelRequest, RoundParticipant

from . import closing, statements
from .ending import decline_reason, discard_input, drop
from .locking import lock_round_row
from .messages import round_end
from .transitions import OPEN_STATUSES, PARTICIPANT_ORDER, SUM_FIXED, step_of

CHUNK = 1 << 20


@dataclass(frozen=True)
class StageReply:
    """One pod's ``round.reply``, as its connection received it."""

    pod_id: uuid.UUID | str
    round_id: int
    stage: str
    payload: Any


def round_reply(*, pod_id: uuid.UUID | str, round_id: int, stage: str, payload: Any) -> bool:
    """A pod's answer to the open stage (advertise_keys, share_keys, consistency_check or
    unmask): :func:`round_replies` for one answer."""
    return round_replies([StageReply(pod_id, round_id, stage, payload)])[0]


def round_replies(replies: Sequence[StageReply]) -> list[bool]:
    """Pods' answers to their rounds' open stages, in the order given; for each, False when
    the pod is not in that round.

    One transaction per round in the batch: the round's row locked once, the pods' rows read
    in one query, every recorded answer written in one UPDATE, one "all answered?" check —
    what a single answer cost before, shared by every answer a process took in meanwhile
    (``pods.batching``). A repeat of an answer already given (the pod was asked again after a
    reconnection) is ignored; anything else out of order drops the pod.
    """
    results = [False] * len(replies)
    by_round: dict[int, list[int]] = {}
    for position, reply in enumerate(replies):
        by_round.setdefault(reply.round_id, []).append(position)
    for round_id in sorted(by_round):  # rounds in pk order: two batches never wait on each other
        positions = by_round[round_id]
        taken = _replies_to_round(round_id, [replies[i] for i in positions])
        for position, accepted in zip(positions, taken, strict=True):
            results[position] = accepted
    return results


@transaction.atomic
def _replies_to_round(round_id: int, replies: list[StageReply]) -> list[bool]:
    locked = statements.lock_round_values(round_id, "status")
    if locked is None:
        return [False] * len(replies)
    step = step_of(locked[0])
    current = step.stage.value if step is not None else None
    # Under the round's lock: every writer of a participant's stage takes it first (locking).
    # Their replies are not read: only a repeat of the current stage (rare) reads its own.
    mine = statements.answering(round_id, [r.pod_id for r in replies])
    recorded: dict[int, RoundParticipant] = {}
    changed = False
    taken = []
    for reply in replies:
        participant = mine.get(statements.pod_key(reply.pod_id))
        taken.append(participant is not None)
        if participant is None:
            continue
        if (
            step is not None
            and step.answered_over_channel
            and reply.stage == current
            and isinstance(reply.payload, dict)
            and not participant.dropped
            and participant.stage_reached == step.waiting
        ):
            participant.reply = reply.payload
            participant.stage_reached = step.answered
            recorded[participant.pk] = participant
        elif not participant.dropped and not _repeated(
            participant, reply.stage, current, reply.payload
        ):
            # Out of order, malformed, or a different second answer to the current stage.
            drop(participant, current or reply.stage, "out_of_order")
            changed = True
    if recorded:
        update_rows(list(recorded.values()), ["reply", "stage_reached"])
    if step is not None and (recorded or changed):
        closing.close_when_answered(round_id, step.status)
    return taken


def _repeated(participant: RoundParticipant, stage: str, current: str | None, payload: Any) -> bool:
    """Whether an answer repeats one the pod gave already: the current stage's answer again,
    or any answer to a stage it answered that has closed since (that one is no longer read)."""
    if participant.dropped or stage not in PARTICIPANT_ORDER or stage == "masked_input":
        return False
    if PARTICIPANT_ORDER.index(participant.stage_reached) < PARTICIPANT_ORDER.index(stage):
        return False  # never answered that stage: out of order
    return stage != current or participant.reply == payload


@transaction.atomic
def round_decline(*, pod_id: uuid.UUID | str, round_id: int, code: str) -> bool:
    """A pod refused the task (its own consent check, no data...): drop it from the round.
    False when the pod is not an active participant of that round."""
    training_round = lock_round_row(round_id)
    if training_round is None:
        return False
    participant = (
        RoundParticipant.objects.filter(
            round_id=round_id, pod_id=pod_id, pod__status=Pod.Status.ACTIVE
        )
        .select_related("pod")
        .first()
    )
    if participant is None:
        return False
    step = step_of(training_round.status)
    if participant.dropped or step is None:
        # Already out, or the round's stages are over (aggregating or finished: a late or
        # repeated decline changes nothing, and a finished round's history stays as it ended).
        return True
    drop(participant, step.stage.value, decline_reason(code))
    closing.close_when_answered(round_id, step.status)
    return True


def user_leaves_rounds(
    *, user_id: int, model_request_id: uuid.UUID | None = None, reason: str
) -> int:
    """Drop a person's pods from running rounds at once (withdrawal, or "pause all training").

    Their masked input, if already sent, stays out of the sum only if the round is still
    collecting; after that the protocol has already committed to the survivor set.
    """
    running = RoundParticipant.objects.filter(
        user_id=user_id,
        dropped_at_stage="",
        round__status__in=[s for s in OPEN_STATUSES if s not in SUM_FIXED],
        round__model_request__status=ModelRequest.Status.TRAINING,
    )
    if model_request_id is not None:
        running = running.filter(round__model_request_id=model_request_id)
    dropped = 0
    for round_id in set(running.values_list("round_id", flat=True)):
        with transaction.atomic():
            training_round = lock_round_row(round_id)
            step = step_of(training_round.status) if training_round else None
            if step is None:
                continue
            for participant in RoundParticipant.objects.filter(
                round_id=round_id, user_id=user_id, dropped_at_stage=""
            ):
                # Dropped before its stage closes: the state never takes its answer in, and a
                # masked input already stored is left out like a pre-mask dropout's.
                drop(participant, step.stage.value, reason)
                discard_input(participant)
                dropped += 1
                delivery.to_pod(participant.pod_id, round_end(round_id, RoundEnd.LEFT))
            closing.close_when_answered(round_id, step.status)
    return dropped
