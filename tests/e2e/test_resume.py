"""A server that crashed mid-round: the round goes on once the pods reconnect.

Four simulated pods are connected to a live server, which is then killed. While it is down a
round opens: its first stage is sent to nobody. When the server is back, each pod, on
reconnecting, is asked the stage it has not answered; the round completes with all four pods,
the same attempt, nobody dropped.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from consent.services import consent_grant
from dataspace.processes import stop
from pods.models import Pod
from pods.presence import online_pods
from tests.factories import open_request
from tests.live import ROOT, LiveService, on_test_database, wait_for
from training.models import ModelRequest, TrainingRound
from training.rounds import opening

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PODS = 4


def test_a_round_opened_while_the_server_was_down_completes_after_reconnection(
    tmp_path: Path,
) -> None:
    def server(port: int | None = None) -> LiveService:
        # The embedded runtime (in-memory channel layer, in-process clock and aggregation) on
        # the test database: this server process is the only one the pods can reach.
        return on_test_database(
            tmp_path,
            port=port,
            REDIS_URL="",
            ROUNDS_TICK_SECONDS="0.5",
            ROUND_STAGE_SECONDS="120",
            MEDIA_ROOT=str(settings.MEDIA_ROOT),  # where this process stored the weights
        ).start()

    model_request = open_request(rounds=1, cohort_size=PODS, min_participants=PODS)
    first = server()
    homes = tmp_path / "homes"
    call_command(
        "provision_pods",
        simulated=True,
        count=PODS,
        homes=homes,
        server=first.url,
        stdout=io.StringIO(),
    )
    pods = list(Pod.objects.filter(name__startswith="sim-pod-"))
    simulator = subprocess.Popen(
        [
            *(sys.executable, "-m", "pods.agent.cli", "--json", "simulate"),
            *("--pods", str(PODS), "--homes", str(homes), "--dataset", "breast_screening"),
            *("--duration", "120", "--stats-every", "3600"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "pods.log").open("wb"),
        text=True,
    )
    second = None
    try:
        wait_for(lambda: online_pods().count() == PODS, 60, "the pods to connect")
        assert first.process is not None
        first.process.kill()  # a crash: no goodbye to anyone
        first.process.wait(10)

        # Meanwhile the people consent and the round opens; its messages reach no pod.
        for pod in pods:
            consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        opened = opening.request_try_start(model_request)
        assert opened is not None and opened.cohort_size == PODS

        second = server(port=first.port)
        wait_for(
            lambda: (
                ModelRequest.objects.get(pk=model_request.pk).status
                in (ModelRequest.Status.COMPLETED, ModelRequest.Status.FAILED)
            ),
            90,
            "the request to finish",
        )
        rounds = list(TrainingRound.objects.filter(model_request=model_request))
        assert [(r.number, r.attempt, r.status) for r in rounds] == [(1, 1, "completed")]
        assert rounds[0].pk == opened.pk and rounds[0].survivors == PODS
        assert not rounds[0].participants.exclude(dropped_at_stage="").exists()
    finally:
        stop(simulator, 15)
        if second is not None:
            second.stop()
        if first.process is not None and first.process.poll() is None:
            first.stop()
    out = simulator.stdout.read() if simulator.stdout else ""
    ends = [json.loads(line) for line in out.splitlines() if '"round_end"' in line]
    assert [e["status"] for e in ends] == ["completed"] * PODS
