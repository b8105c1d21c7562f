"""Chaos: the rounds clock (Celery beat) killed for a stage, then restarted.

Beat is killed with SIGKILL when round 1's share_keys stage opens. Stage closes and the next
round's opening do not wait for the clock (the last answer, the root's commit do them), so
the request goes on; ``/readyz`` reports the clock ``stale`` meanwhile. Once that stage has
closed and the staleness shows, beat is started again on its (possibly half-written)
schedule file, as a supervisor would. Prints restart → clock ticking (``/readyz`` ok), and
asserts the request ends as every case does.
"""

from __future__ import annotations

import time

from tests.chaos.topology import (
    MARKS,
    Stack,
    check_request,
    kill,
    report,
    wait_status,
)
from tests.live import wait_for

pytestmark = MARKS

ROUNDS = 2


def test_the_clock_stopped_for_a_stage_and_restarted(stack: Stack) -> None:
    stack.web_env = {"ROUNDS_CLOCK_STALE_SECONDS": "5"}
    model_request = stack.federation([(0, 3), (1, 3)], rounds=ROUNDS, min_participants=5)
    first = stack.first_round(model_request)
    wait_status(first, {"share_keys", "masked_input", "consistency_check", "unmask"}, 120)
    assert stack.beat_process is not None
    killed_at = kill(stack.beat_process)

    wait_status(
        first, {"masked_input", "consistency_check", "unmask", "aggregating", "completed"}, 120
    )
    wait_for(lambda: stack.clock_state() == "stale", 60, "/readyz to report the clock stale")
    restarted_at = time.monotonic()
    stack.beat()
    wait_for(lambda: stack.clock_state() == "ok", 60, "/readyz to report the clock ticking")
    # The fault a stopped clock makes is its absence: recovery counts from its restart.
    report(
        "clock killed for a stage, then restarted",
        time.monotonic() - restarted_at,
        f" (down {restarted_at - killed_at:.1f} s while round 1 went on)",
    )
    check_request(stack, model_request, ROUNDS)
