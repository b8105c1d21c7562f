"""The clock of every round: deadlines, lost closes, resends, stuck aggregations, next rounds.

:func:`rounds_tick` runs every ``ROUNDS_TICK_SECONDS``: on Celery beat in production
(``training.tasks.rounds_tick``, exactly one beat process), or in the web process itself in the
embedded default (:func:`ensure_running`, started with the first pod connection — rounds need
pods). Without it no request leaves recruiting and no deadline passes, so every tick records
when it ran in the shared cache and ``/readyz`` says when none has run lately
(:func:`clock_health`). Ticks are idempotent: two clocks at once cost work, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from django.utils import timezone

from training.models import ModelRequest, RoundStatus, TrainingRound

from . import aggregation, closing, opening, resending, sweeping
from .cohort import recruiting_with_enough_consents
from .transitions import FINISHED_STATUSES, OPEN_STATUSES

logger = logging.getLogger(__name__)


def rounds_tick(now: datetime | None = None) -> None:
    """Close stages past their deadline (dropping silent pods) and stages every pod has
    answered whose close was lost (a process killed between the last answer and the close);
    ask pods that have not answered the open stage again every ``ROUND_RESEND_SECONDS`` (its
    message may have been lost with the process that sent it);
    enqueue again the aggregation work (shards, root) of a round where no shard has reported
    for ``ROUND_RESEND_SECONDS`` (a killed worker's task, a lost enqueue); open the next round of
    a training request that has none running (e.g. after a retry found too few pods online);
    start requests that can; now and then, sweep files a killed process left behind."""
    now = now or timezone.now()
    for training_round in TrainingRound.objects.filter(status__in=list(OPEN_STATUSES)).only(
        "pk", "status", "stage_deadline", "metrics", "started_at"
    ):
        round_id, status, deadline = (
            training_round.pk,
            training_round.status,
            training_round.stage_deadline,
        )
        if (deadline is not None and deadline <= now) or closing.all_answered(round_id, status):
            closing.round_advance(round_id, status, now)
        elif resending.resend_due(training_round, now):
            resending.stage_resend(round_id, status, now)
    for training_round in TrainingRound.objects.filter(status=RoundStatus.AGGREGATING).only(
        "pk", "stage_deadline", "metrics", "started_at"
    ):
        if resending.resend_due(training_round, now):
            aggregation.aggregation_nudge(training_round.pk, now)
    active = TrainingRound.objects.exclude(status__in=list(FINISHED_STATUSES))
    for model_request in ModelRequest.objects.filter(status=ModelRequest.Status.TRAINING).exclude(
        rounds_run__in=active
    ):
        opening.resume(model_request, now)
    # One read first: a request still short of consents (most ticks) costs no lock — on
    # SQLite, a write transaction that every answer batch of a running round waited for.
    for model_request in recruiting_with_enough_consents(now):
        opening.request_try_start(model_request, now)
    if sweeping.sweep_due():
        sweeping.sweep_files(now)
    cache.set(LAST_TICK_KEY, time.time(), timeout=None)


LAST_TICK_KEY = "rounds:clock:last_tick"


def clock_health() -> tuple[str, float | None]:
    """Whether a rounds clock ticks: ``ok``, ``stale`` (none for ``ROUNDS_CLOCK_STALE_SECONDS``),
    ``never`` (none recorded: e.g. no Celery beat in production) or ``idle`` (the embedded
    in-process clock, which starts with the first pod connection); and seconds since the last
    tick, if any."""
    last = cache.get(LAST_TICK_KEY)
    if not isinstance(last, int | float):
        return ("idle" if settings.ROUNDS_TICK_IN_PROCESS else "never"), None
    age = max(0.0, time.time() - float(last))
    return ("ok" if age <= settings.ROUNDS_CLOCK_STALE_SECONDS else "stale"), age


# -- the in-process clock (embedded default) ----------------------------------------------------

_task: asyncio.Task[None] | None = None


def _tick_once() -> None:
    close_old_connections()
    try:
        rounds_tick()
    except Exception:  # a failed tick is retried on the next one; never kill the clock
        logger.exception("rounds tick failed")
    finally:
        close_old_connections()


async def _loop() -> None:
    # Through sync_to_async on the thread of every other database call of the process, so
    # messages it sends to pods go through the process's channel layer on the right loop.
    tick = sync_to_async(_tick_once, thread_sensitive=True)
    while True:
        await asyncio.sleep(settings.ROUNDS_TICK_SECONDS)
        await tick()


def ensure_running() -> bool:
    """Start the clock on the running loop once, if this process is meant to run it."""
    global _task
    if not settings.ROUNDS_TICK_IN_PROCESS:
        return False
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_loop())
        logger.info("rounds clock running in-process every %ss", settings.ROUNDS_TICK_SECONDS)
    return True
