"""Rounds that survive faults (issue 12): stage messages lost with the process that sent them,
files left behind by a killed process. The engine in one process, real SecAgg+ and training."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from tests.training.rounds.test_engine import (  # the autouse fixture runs tasks inline
    SimPod,
    _tasks_in_process,  # noqa: F401
    breast_data,
    open_round,
)
from training.models import TrainingRound
from training.rounds import clock as rounds_clock

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_clock_asks_again_pods_whose_stage_message_was_lost(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The process that closed advertise_keys died right after its commit: no pod got the
    share_keys message. Within the resend interval (not the deadline) the clock sends it
    again, once per interval, only to pods that have not answered; the round completes with
    nobody dropped."""
    settings.ROUND_RESEND_SECONDS = 5
    x, y = breast_data()
    opened = open_round(monkeypatch, 4)
    training_round, outbox = opened.round, opened.outbox
    pods = {
        pod_id: SimPod(pod, key, x[i * 60 : (i + 1) * 60], y[i * 60 : (i + 1) * 60])
        for i, (pod_id, (pod, key)) in enumerate(opened.pods.items())
    }
    lost: list[Any] = []
    while outbox:
        pod_id, message = outbox.pop(0)
        if message.get("stage") == "share_keys":
            lost.append(pod_id)  # sent after commit by a process that then died
            continue
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.SHARING and len(lost) == 4
    closed = timezone.now()
    assert training_round.stage_deadline is not None

    # Before the resend interval nobody is asked again.
    rounds_clock.rounds_tick(closed + timezone.timedelta(seconds=2))
    assert outbox == []
    # After it, every pod still waiting is asked again: well before the deadline.
    resent_at = closed + timezone.timedelta(seconds=6)
    assert resent_at < training_round.stage_deadline
    rounds_clock.rounds_tick(resent_at)
    assert sorted(str(p) for p, m in outbox if m["stage"] == "share_keys") == sorted(
        str(p) for p in lost
    )
    assert len(outbox) == 4
    # Idempotent: another tick within the interval asks nobody again.
    rounds_clock.rounds_tick(resent_at + timezone.timedelta(seconds=1))
    assert len(outbox) == 4

    # One pod answers; the next resend goes only to the three still waiting.
    first_pod, first_message = outbox.pop(0)
    pods[first_pod].handle(first_message)
    outbox.clear()
    rounds_clock.rounds_tick(resent_at + timezone.timedelta(seconds=6))
    assert len(outbox) == 3 and first_pod not in {p for p, _ in outbox}
    # The pod that answered gets the stage a second time (a resend crossing its answer): it
    # answers with its first answer, and is not dropped.
    outbox.append((first_pod, first_message))
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
    assert not training_round.participants.exclude(dropped_at_stage="").exists()
