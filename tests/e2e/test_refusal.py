"""Pods enforce consent themselves: a service that changes the plan after people consented gets
refusals, not updates.

Three people consent to a request; then the request's training plan is altered in the database
(as a compromised or careless service might). The pods, real clients over real sockets, fetch
their owners' signed receipts, find that the task is not the plan their owners agreed to, and
decline; nothing is uploaded and the request fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from dataspace.processes import stop
from tests.factories import open_request
from tests.live import consenting_simulated_pods, on_test_database, wait_for
from tests.live import simulator as run_simulator
from training.models import ModelRequest, RoundParticipant

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PODS = 3


def test_pods_decline_a_plan_changed_after_consent(tmp_path: Path) -> None:
    server = on_test_database(
        tmp_path,
        REDIS_URL="",  # the embedded runtime: in-process clock, channel layer and aggregation
        ROUNDS_TICK_SECONDS="0.5",
        ROUND_STAGE_SECONDS="3",
        ROUND_MAX_ATTEMPTS="1",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    ).start()
    simulator = None
    try:
        model_request = open_request(rounds=1, cohort_size=PODS, min_participants=PODS)
        homes = tmp_path / "homes"
        consenting_simulated_pods(model_request, server.url, homes, PODS)
        # After consent, the plan changes: a higher learning rate than the notice showed.
        spec = dict(model_request.spec)
        spec["training"] = {**spec["training"], "optimizer": {"type": "sgd", "lr": 9.0}}
        ModelRequest.objects.filter(pk=model_request.pk).update(spec=spec)

        simulator = run_simulator(homes, PODS, tmp_path / "pods.log")
        wait_for(
            lambda: (
                ModelRequest.objects.get(pk=model_request.pk).status == ModelRequest.Status.FAILED
            ),
            60,
            "the request to fail",
        )
        participants = RoundParticipant.objects.filter(round__model_request=model_request)
        assert participants.count() == PODS
        assert {p.drop_reason for p in participants} == {"declined:plan_mismatch"}
        assert not any(p.masked_sha256 or p.masked_input for p in participants)
    finally:
        if simulator is not None:
            stop(simulator, 15)
        server.stop()
    out = simulator.stdout.read() if simulator.stdout else ""
    events = [json.loads(line) for line in out.splitlines()]
    declined = [e["code"] for e in events if e.get("event") == "declined"]
    assert declined == ["plan_mismatch"] * PODS
    assert events[-1]["declined"] == {"plan_mismatch": PODS}  # the simulator's summary
