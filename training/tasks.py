"""Celery entry points only: each calls into the rounds engine. Nothing imports this module
(the engine enqueues these by name). All idempotent; each is safe to run twice or after a
worker died half-way (acks are late, lost workers' tasks are redelivered)."""

from __future__ import annotations

from celery import shared_task

from training.rounds import aggregation, clock


@shared_task(ignore_result=True)
def rounds_tick() -> None:
    """Stage deadlines, stuck aggregations, next rounds (scheduled by Celery beat)."""
    clock.rounds_tick()


@shared_task(ignore_result=True)
def aggregate_shard(round_id: int, index: int) -> None:
    """A leaf of the aggregation tree: the masked sum of one coordinate range."""
    aggregation.shard_sum(round_id, index)


@shared_task(ignore_result=True)
def finalize_round(round_id: int) -> None:
    """The root: remove masks, decode, update the model, record the round."""
    aggregation.round_finalize(round_id)
