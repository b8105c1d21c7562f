"""Chaos: a replica of simulated pods killed mid-collection, and restarted.

Three ``simulate`` replicas (two pods each); the one on web 0 holding two pods is killed
with SIGKILL while round 1 collects masked inputs, and started again at once, as a
supervisor would: its flock claims died with it, so it claims its pod homes again. Its pods
lost their round keys: asked again, they decline (``round_state_lost``), so the stage
closes without waiting for its deadline, and the round completes with the four others (a
cohort still above its minimum: no retry). Prints kill → round completed.
"""

from __future__ import annotations

import time

from tests.chaos.topology import (
    MARKS,
    Stack,
    check_request,
    kill,
    report,
    wait_finished,
    wait_status,
)
from training.models import TrainingRound

pytestmark = MARKS

ROUNDS = 2


def test_a_pods_replica_killed_mid_collection_and_restarted(stack: Stack) -> None:
    model_request = stack.federation([(0, 2), (1, 2), (0, 2)], rounds=ROUNDS, min_participants=4)
    first = stack.first_round(model_request)
    reached = wait_status(
        first, {"masked_input", "consistency_check", "unmask", "aggregating"}, 120
    )
    assert reached == TrainingRound.Status.COLLECTING, "collection closed unseen"
    replica = stack.replicas[2]
    assert replica.process is not None

    killed_at = kill(replica.process)
    stack.start_replica(replica)

    done = wait_finished(model_request, 1, 120)
    report("pods replica killed mid-collection", time.monotonic() - killed_at)
    assert done.survivors >= 4
    check_request(stack, model_request, ROUNDS)
