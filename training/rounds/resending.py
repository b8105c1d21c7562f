"""Asking again: the open stage re-sent to every live participant that has not answered.

Stage messages leave after commit through the channel layer, best effort
(:mod:`dataspace.delivery`): the process that closed a stage may die between its commit and its
sends, a pod's connection may sit on a web process that restarted, a channel-layer message may
expire. The database holds the truth, so the clock (:mod:`training.rounds.clock`) asks every
participant still waiting on the open stage again once ``ROUND_RESEND_SECONDS`` have passed
since it was last asked and since the last answer to it came in — at most once per interval,
whoever runs the clock. Repeats are harmless: a pod answers a stage it already answered with
its first answer (``pods.agent.rounds``), and the engine takes a repeated answer as a repeat
(:func:`training.rounds.answers.round_reply`).

While answers still come in, the pods are at work, not lost: a large cohort's stage lasts many
intervals, and asking all its waiting pods again every interval made every pod's answer slower
and cost the service O(n) per interval — O(n²) per stage. A lost message is noticed when the
answers stop; a pod whose message was lost is asked again an interval later (or dropped at the
deadline, as a silent pod would be).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from dataspace import delivery
from training.models import RoundParticipant, TrainingRound

from .locking import lock_round_row
from .messages import open_stage, stage_message
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


def _answered_key(round_id: int, status: str) -> str:
    return f"rounds:answered:{round_id}:{status}"


def answer_came(round_id: int, status: str) -> None:
    """Note that an answer to the round's open stage ``status`` came in (or a pod left it):
    the clock asks again only an interval after the last (in the shared cache, so that any
    process's clock sees it; best effort — a lost note only brings a resend forward)."""
    cache.set(
        _answered_key(round_id, status), time.time(), timeout=settings.ROUND_STAGE_SECONDS * 2
    )


def resend_due(training_round: TrainingRound, now: datetime) -> bool:
    """Whether the open stage (or the aggregation) is due to be asked again."""
    interval = timedelta(seconds=settings.ROUND_RESEND_SECONDS)
    if last_asked(training_round) + interval > now:
        return False
    answered = cache.get(_answered_key(training_round.pk, training_round.status))
    if isinstance(answered, int | float):
        return datetime.fromtimestamp(answered, tz=UTC) + interval <= now
    return True


def stage_resend(round_id: int, status: str, now: datetime) -> int:
    """Send stage ``status`` again to each live participant of the round that has not answered
    it, if it is due; the number of pods asked. Under the round's lock, so two clocks (or a
    clock and a stage close) never both ask, and never ask for a stage that has just closed.
    The stage's state and shared parts are the ones its close left (messages.open_stage): a
    resend reads only who is still waiting."""
    with transaction.atomic():
        training_round = lock_round_row(
            round_id,
            *("status", "metrics", "stage_deadline", "started_at"),
            *("model_request", "base_version"),
        )
        step = step_of(training_round.status) if training_round is not None else None
        if (
            training_round is None
            or training_round.status != status
            or step is None
            or not resend_due(training_round, now)
        ):
            return 0
        opened = open_stage(training_round, step)
        if opened is None:
            return 0
        server, parts = opened
        waiting = list(
            RoundParticipant.objects.filter(
                round_id=round_id, dropped_at_stage="", stage_reached=step.waiting
            )
            .order_by("index")
            .values_list("pod_id", "index")
        )
        delivery.to_pods(
            (pod_id, stage_message(training_round, server, index, step, parts))
            for pod_id, index in waiting
        )
        training_round.metrics = {**training_round.metrics, ASKED_AT: now.isoformat()}
        training_round.save(update_fields=["metrics"])
        return len(waiting)
