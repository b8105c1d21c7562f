"""The aggregation tree: masked partial sums per coordinate range, then the root.

Leaves (:func:`shard_sum`, one Celery task per range) sum the committed masked inputs; a partial
sum stays masked, since masks cancel only in the total. The root (:func:`round_finalize`)
removes the remaining masks from each partial sum and hands the decoded total to the model
update. Tasks are enqueued by name, so the engine never imports ``training.tasks``.

Work lost with a killed worker is asked for again by the clock (:func:`aggregation_nudge`):
when no shard has reported for ``ROUND_RESEND_SECONDS``, the missing shards (or the root) are
enqueued again. Every task is idempotent and a shard's sum is written once, under the round's
lock, by the first task to finish it; a duplicate computes and then writes nothing.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt
from celery import signature
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction
from django.utils import timezone

from training.models import ModelRequest, RoundStatus, TrainingRound
from training.secagg.aggregate import remove_masks, shard_ranges, sum_range
from training.secagg.errors import AbortError

from .ending import abort
from .files import SHARDS_DIR, remove_round_dir, round_dir
from .locking import lock_participants, lock_round, lock_round_row
from .resending import ASKED_AT, resend_due

SHARD_TASK = "training.tasks.aggregate_shard"
FINALIZE_TASK = "training.tasks.finalize_round"


def shards_of(training_round: TrainingRound) -> list[tuple[int, int]]:
    return shard_ranges(int(training_round.vector_length), settings.ROUND_AGGREGATION_SHARDS)


def shard_path(round_id: int, index: int) -> str:
    return f"{round_dir(SHARDS_DIR, round_id)}/shard-{index}.u32"


def shards_complete(training_round: TrainingRound) -> bool:
    return len(training_round.metrics.get("shards_done", [])) == len(shards_of(training_round))


def dispatch_shards(round_id: int, only_missing: bool = False) -> None:
    """Enqueue a leaf task per coordinate range (only those not yet done, for the clock)."""
    training_round = TrainingRound.objects.get(pk=round_id)
    done = set(training_round.metrics.get("shards_done", [])) if only_missing else set()
    for index in range(len(shards_of(training_round))):
        if index not in done:
            signature(SHARD_TASK, args=(round_id, index)).delay()


def _abort_missing_input(round_id: int) -> None:
    with transaction.atomic():
        locked, _server = lock_round(round_id)
        if locked.status == RoundStatus.AGGREGATING:
            everyone = lock_participants(locked)
            abort(locked, everyone, "aggregating", "A masked input is missing.", timezone.now())


def shard_sum(round_id: int, index: int) -> None:
    """One leaf: Σ of the committed masked inputs over one coordinate range, still masked
    (self masks and masks shared with dropped pods remain). Idempotent."""
    training_round = TrainingRound.objects.get(pk=round_id)
    if training_round.status != RoundStatus.AGGREGATING:
        return
    if index in training_round.metrics.get("shards_done", []):
        return
    start, stop = shards_of(training_round)[index]
    # Exactly the inputs the protocol committed to when collection closed — a pod dropped
    # later (while unmasking) stays in the sum: its masks are removed like everyone's.
    committed = set(training_round.secagg_state.get("masked", []))
    inputs = list(
        training_round.participants.filter(index__in=committed)
        .only("round_id", "index", "masked_input")
        .order_by("index")
    )
    if len(inputs) != len(committed) or not all(p.masked_input for p in inputs):
        _abort_missing_input(round_id)
        return
    # Valued groups: one masked partial sum per group, one after the other (each group's
    # masks cancel inside its own sum); one block when the round is not split.
    blocks = [set(g) for g in training_round.secagg_state.get("groups", [])] or [committed]
    pieces = []
    for block in blocks:
        handles = [p.masked_input.open("rb") for p in inputs if p.index in block]
        try:
            pieces.append(sum_range(handles, start, stop))
        finally:
            for handle in handles:
                handle.close()
    partial = np.concatenate(pieces)
    with transaction.atomic():
        locked = lock_round_row(round_id, "status", "metrics", "vector_length")
        if (
            locked is None
            or locked.status != RoundStatus.AGGREGATING
            or index in locked.metrics.get("shards_done", [])
        ):
            return  # a duplicate (re-dispatched by the clock, redelivered) lost the race
        # Written once, under the lock: a file here is a partial write of a killed task.
        path = shard_path(round_id, index)
        if default_storage.exists(path):
            default_storage.delete(path)
        default_storage.save(path, ContentFile(partial.astype("<u4").tobytes()))
        done = sorted({*locked.metrics.get("shards_done", []), index})
        # A shard reporting is progress: the clock asks again only after a silence.
        locked.metrics = {
            **locked.metrics,
            "shards_done": done,
            ASKED_AT: timezone.now().isoformat(),
        }
        locked.save(update_fields=["metrics"])
        if shards_complete(locked):
            transaction.on_commit(lambda: signature(FINALIZE_TASK, args=(round_id,)).delay())


def aggregation_nudge(round_id: int, now: datetime) -> bool:
    """The clock, for an aggregating round where no shard has reported (and no work was
    dispatched) for ``ROUND_RESEND_SECONDS``: enqueue the shards not done again, or the root
    once they all are. A killed worker's task then costs that interval, not the broker's
    visibility timeout nor the stage deadline. The round's row is taken with ``NOWAIT``: a
    root holds it while it runs, so a locked row means a live process is finishing the
    round (a killed one's connection, and its lock, are gone) and nothing is asked again.
    Whether work was enqueued."""
    try:
        with transaction.atomic():
            locked = (
                TrainingRound.objects.select_for_update(nowait=True)
                .only("status", "metrics", "vector_length", "stage_deadline", "started_at")
                .filter(pk=round_id)
                .first()
            )
            if (
                locked is None
                or locked.status != RoundStatus.AGGREGATING
                or not resend_due(locked, now)
            ):
                return False
            locked.metrics = {**locked.metrics, ASKED_AT: now.isoformat()}
            locked.save(update_fields=["metrics"])
            if shards_complete(locked):
                transaction.on_commit(lambda: signature(FINALIZE_TASK, args=(round_id,)).delay())
            else:
                transaction.on_commit(lambda: dispatch_shards(round_id, only_missing=True))
            return True
    except DatabaseError:  # the row is locked: a root (or a shard's write) is running
        return False


def round_finalize(round_id: int, now: datetime | None = None) -> None:
    """The root: remove the masks from each shard sum, decode, update the model. Idempotent."""
    # Only the root (on a worker) updates the model: web processes, which close stages and so
    # import this module, do not load torch — a restarted web process answers seconds sooner.
    from .model_update import finish

    now = now or timezone.now()
    with transaction.atomic():
        training_round, server = lock_round(round_id)
        if training_round.status != RoundStatus.AGGREGATING or server is None:
            return
        shards = shards_of(training_round)
        if not shards_complete(training_round):
            return
        participants = lock_participants(training_round)
        transaction.on_commit(lambda: remove_round_dir(SHARDS_DIR, round_id))
        if training_round.model_request.status != ModelRequest.Status.TRAINING:
            abort(training_round, participants, "aggregating", "The request was stopped.", now)
            return
        try:
            plan = server.close_unmask()
        except AbortError as exc:  # cannot happen after a successful close; never half-apply
            abort(training_round, participants, "aggregating", exc.message, now)
            return
        blocks = max(1, len(server.groups))
        by_group: list[list[npt.NDArray[np.uint32]]] = [[] for _ in plan.groups]
        for index, (start, _stop) in enumerate(shards):
            with default_storage.open(shard_path(round_id, index), "rb") as handle:
                partial = np.frombuffer(handle.read(), dtype="<u4").astype(np.uint32)
            parts = np.split(partial, blocks)
            for i, (position, members) in enumerate(zip(plan.positions, plan.groups, strict=True)):
                by_group[i].append(remove_masks(parts[position], plan.restricted(members), start))
        group_totals = [
            (p, np.concatenate(g)) for p, g in zip(plan.positions, by_group, strict=True)
        ]
        total = np.zeros(int(training_round.vector_length), dtype=np.uint32)
        for _position, part in group_totals:
            total += part  # wraps mod 2^32, like the masks
        finish(
            training_round,
            server.layout,
            total,
            participants,
            plan,
            now,
            group_totals=group_totals if server.groups else None,
        )
