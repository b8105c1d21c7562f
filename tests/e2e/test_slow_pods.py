"""Mixed devices through the real server: ``dataspace-pod simulate --slow-fraction`` gives half
the pods a quarter of the plan's local steps. They are counted with fewer steps, not dropped —
under FedNova (the step counts ride in the masked sum) and under SCAFFOLD, whose control variate
c the pods download from the server in round 2 and whose c_i each pod keeps in its home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings

from dataspace.demo import demo_request_spec, demo_weights
from dataspace.processes import stop
from pods.agent.simulate import pod_speeds
from tests.factories import ProviderFactory, breast_category
from tests.live import consenting_simulated_pods, on_test_database, wait_for
from tests.live import simulator as run_simulator
from training.models import ModelRequest, TrainingRound
from training.services import model_request_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PODS = 4


def test_pod_speeds_are_drawn_by_seed() -> None:
    assert pod_speeds(4, 0.0, 0.25, seed=1) == [1.0] * 4
    speeds = pod_speeds(10, 0.5, 0.25, seed=3)
    assert sorted(speeds) == [0.25] * 5 + [1.0] * 5
    assert pod_speeds(10, 0.5, 0.25, seed=3) == speeds  # deterministic
    assert any(pod_speeds(10, 0.5, 0.25, seed=s) != speeds for s in range(4, 10))
    for bad in ((1.5, 0.25), (0.5, 0.0), (0.5, 1.5)):
        with pytest.raises(ValueError, match="--slow-"):
            pod_speeds(4, *bad, seed=0)


@pytest.mark.parametrize("algorithm", ["fednova", "scaffold"])
def test_slow_pods_are_counted_with_fewer_steps_in_live_rounds(
    tmp_path: Path, algorithm: str
) -> None:
    server = on_test_database(
        tmp_path,
        REDIS_URL="",  # the embedded runtime: in-process clock, channel layer and aggregation
        ROUNDS_TICK_SECONDS="0.5",
        ROUND_STAGE_SECONDS="30",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    ).start()
    simulator = None
    try:
        breast_category()
        spec = demo_request_spec(rounds=2, cohort_size=PODS, min_participants=PODS, local_epochs=2)
        spec["training"]["algorithm"] = {"type": algorithm}
        model_request = model_request_create(
            provider=ProviderFactory(), spec=spec, weights=demo_weights(spec)
        )
        homes = tmp_path / "homes"
        consenting_simulated_pods(model_request, server.url, homes, PODS)
        simulator = run_simulator(
            homes, PODS, tmp_path / "pods.log", "--slow-fraction", "0.5", "--slow-speed", "0.25"
        )
        wait_for(
            lambda: (
                ModelRequest.objects.get(pk=model_request.pk).status
                in (ModelRequest.Status.COMPLETED, ModelRequest.Status.FAILED)
            ),
            240,
            "the request to end",
        )
        model_request.refresh_from_db()
        assert model_request.status == ModelRequest.Status.COMPLETED, model_request.status_reason
        rounds = TrainingRound.objects.filter(model_request=model_request, status="completed")
        assert sorted(r.number for r in rounds) == [1, 2]
        assert all(r.survivors == PODS for r in rounds)  # nobody dropped, slow or not
        versions = {v.round_number: v for v in model_request.versions.all()}
        if algorithm == "scaffold":
            assert versions[1].control_sha256 and versions[2].control_sha256
            kept = list(homes.glob(f"*/scaffold/{model_request.pk}.safetensors"))
            assert len(kept) == PODS
            assert all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
        else:
            assert not versions[2].control
    finally:
        if simulator is not None:
            stop(simulator, 15)
        server.stop()
    out = simulator.stdout.read() if simulator.stdout else ""
    events = [json.loads(line) for line in out.splitlines()]
    assert next(e for e in events if e.get("event") == "reported")["slow"] == PODS // 2
    trained = [e for e in events if e.get("event") == "trained"]
    assert len(trained) == 2 * PODS  # every pod trained in both rounds
    slow = [e["steps"] for e in trained if e["speed"] < 1.0]
    fast = [e["steps"] for e in trained if e["speed"] == 1.0]
    assert len(slow) == len(fast) == PODS
    assert 0 < max(slow) < min(fast)
    assert len({e["pod"] for e in trained if e["speed"] < 1.0}) == PODS // 2
