"""Asking again: the open stage re-sent to every live participant that has not answered.

Stage messages leave after commit through the channel layer, best effort
(:mod:`dataspace.delivery`): the process that closed a stage may die between its commit and its
sends, a pod's connection may sit on a web process that restarted, a channel-layer message may
expire. The database holds the truth, so the clock (:mod:`training.rounds.clock`) asks every
participant still waiting on the open stage again once ``ROUND_RESEND_SECONDS`` have passed since
it was last asked — at most once per interval, whoever runs the clock. Repeats are harmless: a
pod answers a stage it already answered with its first answer (``pods.agent.rounds``), and the
engine takes a repeated answer as a repeat (:func:`training.rounds.answers.round_reply`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from dataspace import delivery
from training.models import RoundParticipant, TrainingRound
from training.secagg.wire import Stage

from .locking import lock_round
from .messages import KeyLogProofs, stage_message
from .transitions import step_of

ASKED_AT = "asked_at"  # in the round's metrics: when the open stage was last sent to its pods


def last_asked(training_round: TrainingRound) -> datetime:
    """When the round's open stage was last sent (opened, or asked again)."""
    asked = training_round.metrics.get(ASKED_AT)
    if isinstance(asked, str):
        return datetime.fromisoformat(asked)
    if training_round.stage_deadline is not None:  # rounds opened before asked_at was kept
        return training_round.stage_deadline - timedelta(seconds=settings.ROUND_STAGE_SECONDS)
    return training_round.started_at


def resend_due(training_round: TrainingRound, now: datetime) -> bool:
    return last_asked(training_round) + timedelta(seconds=settings.ROUND_RESEND_SECONDS) <= now


def stage_resend(round_id: int, status: str, now: datetime) -> int:
    """Send stage ``status`` again to each live participant of the round that has not answered
    it, if it is due; the number of pods asked. Under the round's lock, so two clocks (or a
    clock and a stage close) never both ask, and never ask for a stage that has just closed."""
    with transaction.atomic():
        training_round, server = lock_round(round_id)
        step = step_of(training_round.status)
        if (
            training_round.status != status
            or step is None
            or server is None
            or not resend_due(training_round, now)
        ):
            return 0
        participants = list(
            RoundParticipant.objects.filter(round_id=round_id).defer("reply").order_by("index")
        )
        waiting = [p for p in participants if not p.dropped and p.stage_reached == step.waiting]
        if waiting:
            key_log = KeyLogProofs(participants) if step.stage is Stage.SHARE_KEYS else None
            for p in waiting:
                delivery.to_pod(
                    p.pod_id, stage_message(training_round, server, p.index, step, key_log)
                )
        training_round.metrics = {**training_round.metrics, ASKED_AT: now.isoformat()}
        training_round.save(update_fields=["metrics"])
        return len(waiting)
