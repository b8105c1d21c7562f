"""Chaos: a Celery worker killed during aggregation (tests/chaos/topology.py has the topology).

Two workers, as production runs them. Round 1's aggregation starts while worker A holds one
shard task (its pool child is stopped, so the task is reserved and unacknowledged, as in a
worker busy with it) and worker B does the others; A is then killed with SIGKILL — main
process and child — and restarted, as a supervisor would. The clock enqueues the shard again
once no shard has reported for ``ROUND_RESEND_SECONDS``, and B sums it (issue 12: before, only
the broker's visibility timeout — kombu's default an hour, then a third of a stage — or the
stage deadline brought it back). Prints kill → round completed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.chaos.topology import (
    MARKS,
    Stack,
    check_request,
    children,
    kill,
    report,
    reserved_tasks,
    wait_finished,
)
from tests.live import wait_for
from training.models import TrainingRound
from training.rounds.aggregation import shards_of

pytestmark = MARKS

ROUNDS = 2
SHARD = "training.tasks.aggregate_shard"


def test_a_worker_killed_during_aggregation(stack: Stack) -> None:
    model_request = stack.federation([(0, 3), (1, 3)], rounds=ROUNDS, min_participants=5)
    worker_a = stack.processes[0]
    worker_b = stack.worker("worker-b")
    # The clock opens round 1, then pauses (no tick task in the way); worker A's only pool
    # child is stopped: the next task A takes (a shard of round 1) stays reserved, unacked.
    first = stack.first_round(model_request)
    assert stack.beat_process is not None
    os.kill(stack.beat_process.pid, signal.SIGSTOP)
    wait_for(lambda: not reserved_tasks(), 30, "the workers to go idle")
    pool = children(worker_a.pid)
    assert pool, "worker A has no pool child"
    for child in pool:
        os.kill(child, signal.SIGSTOP)

    def a_holds_the_last_shard() -> bool:
        # B has summed every other shard; A has the last one reserved.
        aggregating = TrainingRound.objects.get(pk=first.pk)
        done = aggregating.metrics.get("shards_done", [])
        return (
            aggregating.status == TrainingRound.Status.AGGREGATING
            and len(done) == len(shards_of(aggregating)) - 1
            and reserved_tasks() == [SHARD]
        )

    try:
        wait_for(a_holds_the_last_shard, 120, "worker A to hold a shard of round 1", every=0.1)
    except AssertionError:
        pytest.fail(stack.logs())
    assert worker_b.poll() is None

    # The fault: worker A dies mid-aggregation; its supervisor restarts it.
    killed_at = kill(worker_a)
    os.kill(stack.beat_process.pid, signal.SIGCONT)
    stack.worker("worker-a2")

    wait_finished(model_request, 1, 120)
    report("worker killed during aggregation", time.monotonic() - killed_at)
    check_request(stack, model_request, ROUNDS)
