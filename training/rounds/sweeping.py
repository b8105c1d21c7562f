"""Sweeping: files a killed process left behind.

Shard sums (``aggregates/round-<id>/``) are deleted after the root commits, and masked inputs
when their round ends or their pod leaves — both by the process doing that work. A process
killed at the wrong moment leaves them: a shard task that finished after its round ended, a
root whose after-commit deletion never ran, an upload stored but never committed. They are
masked vectors (noise without their neighbours' masks) but still nothing to keep: the clock
sweeps them once per ``ROUND_SWEEP_SECONDS``, whichever process runs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import transaction

from training.models import RoundParticipant, TrainingRound

from .ending import discard_input
from .transitions import FINISHED_STATUSES

logger = logging.getLogger(__name__)

SHARDS_DIR = "aggregates"
MASKED_DIR = "masked"
_ROUND_DIR = re.compile(r"^round-(\d+)$")
_SWEEP_KEY = "rounds:sweep"


def _listdir(path: str) -> tuple[list[str], list[str]]:
    try:
        return default_storage.listdir(path)
    except FileNotFoundError:
        return [], []


def _remove_dir(path: str) -> None:
    """Remove an emptied directory where the storage has directories (the file system)."""
    with contextlib.suppress(NotImplementedError, OSError):
        os.rmdir(default_storage.path(path))


def sweep_files(now: datetime) -> dict[str, int]:
    """Delete shard sums of rounds that no longer aggregate, masked inputs of finished rounds,
    and stored masked inputs no participant refers to (older than a stage, so an upload between
    its store and its commit is left alone). Returns what was removed."""
    removed = {"shards": 0, "masked_inputs": 0}
    dirs, _ = _listdir(SHARDS_DIR)
    round_ids = {int(m.group(1)): d for d in dirs if (m := _ROUND_DIR.match(d))}
    running = set(
        TrainingRound.objects.filter(pk__in=round_ids)
        .exclude(status__in=list(FINISHED_STATUSES))
        .values_list("pk", flat=True)
    )
    for round_id, name in round_ids.items():
        if round_id in running:
            continue  # still aggregating (or before it): its shards are in use
        folder = f"{SHARDS_DIR}/{name}"
        for file in _listdir(folder)[1]:
            default_storage.delete(f"{folder}/{file}")
            removed["shards"] += 1
        _remove_dir(folder)

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
