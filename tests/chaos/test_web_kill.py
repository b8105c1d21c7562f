"""Chaos: a web process killed right after a stage close, and restarted on its port.

Pods are pinned to one origin, so a supervisor restarting the process (systemd, compose's
``restart: unless-stopped``) is what brings its pods back. The process is killed as soon as
round 1's share_keys stage has closed — the masked_input messages it was sending after its
commit may be lost, uploads to it fail while it is down. Pods on it retry their upload and
reconnect; pods on the other process that missed their message are asked again by the clock.
Prints kill → round completed.
"""

from __future__ import annotations

import time

from tests.chaos.topology import (
    MARKS,
    Stack,
    check_request,
    report,
    wait_finished,
    wait_status,
)
from training.models import TrainingRound

pytestmark = MARKS

ROUNDS = 2


def test_a_web_process_killed_right_after_a_stage_close(stack: Stack) -> None:
    model_request = stack.federation([(0, 3), (1, 3)], rounds=ROUNDS, min_participants=5)
    first = stack.first_round(model_request)
    closed = wait_status(first, {"masked_input", "consistency_check", "unmask", "aggregating"}, 120)
    assert closed == TrainingRound.Status.COLLECTING, "share_keys closed unseen"

    killed_at = stack.restart_web(0)
    back = time.monotonic() - killed_at  # the restarted process answers /healthz

    wait_finished(model_request, 1, 120)
    report(
        "web process killed after share_keys closed",
        time.monotonic() - killed_at,
        f" (its restart answered after {back:.1f} s)",
    )
    check_request(stack, model_request, ROUNDS)
