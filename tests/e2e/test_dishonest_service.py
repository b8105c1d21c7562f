"""Pods defend their people against a dishonest service, end to end.

A live server whose rounds engine lies to pods (``tests/e2e/dishonest_asgi.py``) and real pod
processes (``dataspace-pod simulate``) over real sockets: the pods decline with the reason
code, upload nothing, and the request fails.
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
DP = {"clip_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 8.0, "delta": 1e-5}


@pytest.mark.parametrize(
    ("malice", "code", "dp"),
    [("one_neighbour", "neighbourhood_below_plan", None), ("strip_dp", "plan_mismatch", DP)],
)
def test_pods_decline_a_dishonest_round(
    tmp_path: Path, malice: str, code: str, dp: dict[str, float] | None
) -> None:
    server = on_test_database(
        tmp_path,
        app="tests.e2e.dishonest_asgi:application",
        DATASPACE_TEST_MALICE=malice,
        REDIS_URL="",  # the embedded runtime: in-process clock, channel layer and aggregation
        ROUNDS_TICK_SECONDS="0.5",
        ROUND_STAGE_SECONDS="3",
        ROUND_MAX_ATTEMPTS="1",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    ).start()
    simulator = None
    try:
        model_request = open_request(rounds=1, cohort_size=PODS, min_participants=PODS, dp=dp)
        homes = tmp_path / "homes"
        consenting_simulated_pods(model_request, server.url, homes, PODS)
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
        assert {p.drop_reason for p in participants} == {f"declined:{code}"}
        assert not any(p.masked_sha256 or p.masked_input for p in participants)
    finally:
        if simulator is not None:
            stop(simulator, 15)
        server.stop()
    out = simulator.stdout.read() if simulator.stdout else ""
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["code"] for e in events if e.get("event") == "declined"] == [code] * PODS
