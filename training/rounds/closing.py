"""Closing a stage: take every recorded answer in, drop who did not answer, ask the next stage.

A pod's answer waits in its participant row (:mod:`training.rounds.answers`); only the close
feeds the answers into the protocol state (:class:`training.secagg.server.ServerRound`, kept as
JSON on the round), so one answer costs a few small queries, not a rewrite of the state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dataspace import delivery
from dataspace.rows import update_rows
from training.models import ModelRequest, RoundParticipant, RoundStatus
from training.secagg.errors import AbortError, SecAggError
from training.secagg.server import ServerRound
from training.secagg.wire import Stage

from . import aggregation, statements
from .cohort import still_consenting
from .ending import abort, discard_input, drop
from .locking import lock_participants, lock_round
from .messages import StageParts, stage_message, stage_opened
from .progress import round_changed
from .resending import ASKED_AT, answer_came
from .transitions import STEPS, SUM_FIXED, StageStep, step_of

logger = logging.getLogger(__name__)


def all_answered(round_id: int, status: str) -> bool:
    """Whether every live participant has answered the round's open stage ``status`` — true
    too when none is left (every pod declined or left): the stage closes, and the round ends,
    at once rather than at its deadline."""
    step = step_of(status)
    if step is None:
        return False
    return not statements.anyone_waiting(round_id, step.waiting)


def close_when_answered(round_id: int, status: str) -> None:
    """Once the current transaction commits, close stage ``status`` if nobody is left to
    answer it (the one "advance when all answered" of every answer and leave path); until
    then, the clock waits an interval from now before asking anyone again (resending)."""
    answer_came(round_id, status)
    if all_answered(round_id, status):
        transaction.on_commit(lambda: round_advance(round_id, status))


def _take_answers(
    server: ServerRound,
    step: StageStep,
    participants: list[RoundParticipant],
    model_request: ModelRequest,
    now: datetime,
) -> None:
    """Feed the stage's recorded answers into the protocol state, consent re-checked for each
    pod up to the close of collection; an answer the protocol refuses drops its pod with the
    protocol's reason."""
    stage = step.stage.value
    consenting = still_consenting(model_request, participants, now)
    sizes: list[RoundParticipant] = []
    for p in participants:
        if p.dropped or p.stage_reached != step.answered:
            continue
        # Once collection has closed the inputs in the sum are fixed (a withdrawal from then on
        # affects later rounds); unmasking shares only remove masks, so they are all taken.
        if step.status not in SUM_FIXED and (not p.pod.is_active or p.user_id not in consenting):
            drop(p, stage, "consent_withdrawn_or_paused")
            discard_input(p)
            continue
        if step.stage is Stage.ADVERTISE_KEYS:
            p.key_log_size = _key_log_size(p.reply)
            sizes.append(p)
        try:
            step.receive(server, p.index, p.reply or {})
        except SecAggError as exc:
            drop(p, stage, exc.code)
    # One prepared statement for the cohort (dataspace.rows), not an UPDATE per pod.
    update_rows(sizes, ["key_log_size"])


def _key_log_size(reply: Mapping[str, Any] | None) -> int:
    size = (reply or {}).get("key_log_size", 0)
    return size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 2**62 else 0


def round_advance(round_id: int, closing: str, now: datetime | None = None) -> None:
    """Close the stage ``closing`` (a round status; dropping whoever did not answer) and start
    the next.

    Closing the unmasking stage moves the round to ``aggregating`` and hands the sum to the
    aggregation tree. Idempotent: a round that has left that stage meanwhile (closed by another
    process, whose decision this one saw only as "all answered") is left alone — never is the
    next stage closed in its place.
    """
    now = now or timezone.now()
    with transaction.atomic():
        training_round, server = lock_round(round_id)
        step = step_of(training_round.status)
        if training_round.status != closing or step is None or server is None:
            return
        stage = step.stage.value
        participants = lock_participants(training_round)
        if training_round.model_request.status != ModelRequest.Status.TRAINING:
            abort(training_round, participants, stage, "The request was stopped.", now)
            return
        _take_answers(server, step, participants, training_round.model_request, now)
        RoundParticipant.objects.filter(round_id=round_id, reply__isnull=False).update(reply=None)
        # The root of the aggregation recomputes the plan from the state before close_unmask.
        state_before = server.to_dict() if step.following == RoundStatus.AGGREGATING else None
        try:
            alive = set(step.close(server))
        except AbortError as exc:
            for p in participants:
                if not p.dropped and p.stage_reached == step.waiting:
                    drop(p, stage, "silent")
            abort(training_round, participants, stage, exc.message, now)
            return
        if step.stage is Stage.MASKED_INPUT and server.group_dropped:
            # Their group fell below the plan's minimum: its inputs are not summed.
            out = set(server.group_dropped)
            for p in participants:
                if p.index in out and not p.dropped:
                    drop(p, stage, "group_below_minimum")
                    discard_input(p)
        if step.following != RoundStatus.AGGREGATING:
            for p in participants:
                if p.index not in alive and not p.dropped:
                    drop(p, stage, "silent")
        logger.info(
            "round %s (%s/%s): %s closed, %d of %d pods go on",
            training_round.pk,
            training_round.number,
            training_round.attempt,
            stage,
            len(alive),
            len(participants),
        )
        # When each stage closed (benchmarks and operators read the timeline here).
        closed_at = {**training_round.metrics.get("closed_at", {}), stage: now.isoformat()}
        training_round.metrics = {
            **training_round.metrics,
            "closed_at": closed_at,
            ASKED_AT: now.isoformat(),
        }
        training_round.status = step.following
        training_round.stage_deadline = now + timedelta(seconds=settings.ROUND_STAGE_SECONDS)
        if step.following == RoundStatus.AGGREGATING:
            # Keep the state from before close_unmask: the root recomputes the plan from it.
            training_round.secagg_state = state_before
            training_round.survivors = len(alive)
            training_round.metrics = {**training_round.metrics, "shards_done": []}
            transaction.on_commit(lambda: aggregation.dispatch_shards(round_id))
        else:
            training_round.secagg_state = server.to_dict()
            following = STEPS[step.following]
            parts = StageParts(training_round, following, participants)
            delivery.to_pods(
                (p.pod_id, stage_message(training_round, server, p.index, following, parts))
                for p in participants
                if p.index in alive
            )
            stage_opened(training_round, server, parts)
        training_round.save(
            update_fields=["status", "stage_deadline", "secagg_state", "survivors", "metrics"]
        )
        round_changed(training_round, training_round.model_request.status)
