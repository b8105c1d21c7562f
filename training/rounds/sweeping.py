"""Sweeping: files a killed process left behind.

Shard sums (``aggregates/round-<id>/``) are deleted after the root commits, and masked inputs
(``masked/round-<id>/``) after their round ends or their pod leaves — both by the process doing
that work (:mod:`.files`). A process killed at the wrong moment leaves them: a shard task that
finished after its round ended, a root or an ending whose after-commit deletion never ran.
They are masked vectors (noise without their neighbours' masks) but still nothing to keep: the
clock sweeps the directories of ended rounds once per ``ROUND_SWEEP_SECONDS``, whichever
process runs it. Inputs stored flat under ``masked/`` by earlier versions are swept when no
row refers to them.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import transaction

from training.models import RoundParticipant, TrainingRound

from .ending import discard_input
from .files import MASKED_DIR, SHARDS_DIR, remove_round_dir
from .transitions import FINISHED_STATUSES

logger = logging.getLogger(__name__)

_ROUND_DIR = re.compile(r"^round-(\d+)$")
_SWEEP_KEY = "rounds:sweep"


def _listdir(path: str) -> tuple[list[str], list[str]]:
    try:
        return default_storage.listdir(path)
    except FileNotFoundError:
        return [], []


def _ended_round_dirs(base: str) -> int:
    """Remove the directories under ``base`` of rounds that ended (or no longer exist); how
    many files they held."""
    dirs, _ = _listdir(base)
    round_ids = {int(m.group(1)) for d in dirs if (m := _ROUND_DIR.match(d))}
    running = set(
        TrainingRound.objects.filter(pk__in=round_ids)
        .exclude(status__in=list(FINISHED_STATUSES))
        .values_list("pk", flat=True)
    )
    return sum(remove_round_dir(base, round_id) for round_id in round_ids - running)


def sweep_files(now: datetime) -> dict[str, int]:
    """Delete the shard sums and masked inputs of rounds that ended, inputs still recorded for
    an ended round, and inputs stored flat (earlier versions) that no participant refers to
    (older than a stage, so an upload between its store and its commit is left alone).
    Returns what was removed."""
    removed = {
        "shards": _ended_round_dirs(SHARDS_DIR),
        "masked_inputs": _ended_round_dirs(MASKED_DIR),
    }
    for participant in RoundParticipant.objects.filter(
        round__status__in=list(FINISHED_STATUSES)
    ).exclude(masked_input=""):
        with transaction.atomic():
            locked = RoundParticipant.objects.select_for_update().get(pk=participant.pk)
            if locked.masked_input:
                discard_input(locked)
                removed["masked_inputs"] += 1

    referenced = set(
        RoundParticipant.objects.exclude(masked_input="").values_list("masked_input", flat=True)
    )
    grace = now - timedelta(seconds=settings.ROUND_STAGE_SECONDS)
    for file in _listdir(MASKED_DIR)[1]:
        name = f"{MASKED_DIR}/{file}"
        if name in referenced:
            continue
        try:
            if default_storage.get_modified_time(name) > grace:
                continue
        except FileNotFoundError:
            continue
        default_storage.delete(name)
        removed["masked_inputs"] += 1
    if any(removed.values()):
        logger.info(
            "swept %d shard sums and %d masked inputs left behind",
            removed["shards"],
            removed["masked_inputs"],
        )
    return removed


def sweep_due() -> bool:
    """Once per ``ROUND_SWEEP_SECONDS`` across every process sharing the cache."""
    return bool(cache.add(_SWEEP_KEY, 1, timeout=settings.ROUND_SWEEP_SECONDS))
