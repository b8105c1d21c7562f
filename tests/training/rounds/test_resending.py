"""The clock asks pods again for the open stage only once answers to it stop: while they come
in, the pods are at work, and asking them all again every interval cost a large cohort O(n) per
interval. The engine in one process, real SecAgg+ and training."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.training.rounds.test_engine import (  # the autouse fixture runs tasks inline
    _tasks_in_process,  # noqa: F401
    open_round,
)
from training.models import TrainingRound
from training.rounds import clock as rounds_clock
from training.rounds.resending import ASKED_AT

pytestmark = pytest.mark.django_db(transaction=True)


def test_pods_are_asked_again_only_an_interval_after_the_last_answer(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.ROUND_RESEND_SECONDS = 5
    opened = open_round(monkeypatch, 4)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    held: list[tuple[Any, dict[str, Any]]] = []
    while outbox:
        pod_id, message = outbox.pop(0)
        if message.get("stage") == "share_keys":
            held.append((pod_id, message))  # on their way: the pods are still at work
            continue
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.SHARING and len(held) == 4
    # The stage was asked a while ago; one pod answers now.
    long_ago = timezone.now() - timedelta(seconds=30)
    training_round.metrics = {**training_round.metrics, ASKED_AT: long_ago.isoformat()}
    training_round.save(update_fields=["metrics"])
    first_pod, first_message = held.pop(0)
    pods[first_pod].handle(first_message)
    answered = timezone.now()

    # An answer came in within the interval: nobody is asked again.
    rounds_clock.rounds_tick(answered + timedelta(seconds=2))
    assert outbox == []
    # The answers stopped for an interval: the three pods still waiting are asked again, once.
    rounds_clock.rounds_tick(answered + timedelta(seconds=6))
    assert sorted(str(p) for p, _ in outbox) == sorted(str(p) for p, _ in held)
    assert all(m["stage"] == "share_keys" for _, m in outbox)
    rounds_clock.rounds_tick(answered + timedelta(seconds=7))
    assert len(outbox) == 3

    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
