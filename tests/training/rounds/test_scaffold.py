"""SCAFFOLD in the live rounds (Karimireddy et al. 2020): the engine against simulated pods
(real SecAgg+, real local training). The service's c travels with the weights, each pod's Δc_i in
the masked vector; c steps from the masked sum only, and each pod keeps its c_i in its home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dataspace.celery import app as celery_app
from pods.agent.controls import ControlVariates
from tests.training.rounds.test_engine import algorithm_request
from training.models import ModelRequest
from training.modelspec import validate_spec, vector_size
from training.modelspec.vectors import control_from_bytes
from training.rounds import opening

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _tasks_in_process() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_scaffold_rounds_step_c_from_the_masked_sum_and_pods_keep_their_c_i(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model_request, outbox, sims = algorithm_request(monkeypatch, "scaffold", rounds=2)
    homes: dict[Any, Path] = {}
    for i, (pod_id, sim) in enumerate(sims.items()):
        homes[pod_id] = tmp_path / f"pod{i}" / "scaffold"
        sim.worker.controls = ControlVariates(homes[pod_id])
    assert opening.request_try_start(model_request) is not None
    tasks: list[dict[str, Any]] = []
    while outbox:
        pod_id, message = outbox.pop(0)
        if "task" in message:
            tasks.append(message["task"])
        sims[pod_id].handle(message)
    model_request.refresh_from_db()
    assert model_request.status == ModelRequest.Status.COMPLETED

    parsed = validate_spec(model_request.spec)
    dim = vector_size(parsed)
    versions = {v.round_number: v for v in model_request.versions.all()}
    assert not versions[0].control  # c = 0 before the first round
    # Round 1 trains from c = 0: its task names no c. Round 2's names the c round 1 made.
    assert [t.get("control_url") for t in tasks if t["base_round"] == 0] == [None] * 4
    later = [t for t in tasks if t["base_round"] == 1]
    assert len(later) == 4
    assert {t["control_sha256"] for t in later} == {versions[1].control_sha256}

    def stored(number: int) -> np.ndarray:
        with versions[number].control.open("rb") as handle:
            return control_from_bytes(handle.read(), dim)

    history = {pod_id: sim.worker.history for pod_id, sim in sims.items()}
    assert all(len(h) == 2 for h in history.values())
    population = 4  # every eligible pod was drawn: N is the cohort
    deltas = [sum(h[r]["control_delta"] for h in history.values()) for r in (0, 1)]
    c1, c2 = stored(1), stored(2)
    # c ← c + Σ_{i∈S} Δc_i / N, from the masked sum (up to fixed point)
    assert np.abs(c1).max() > 1e-3
    assert np.allclose(c1, deltas[0] / population, atol=1e-5)
    assert np.allclose(c2, c1 + deltas[1] / population, atol=1e-5)
    assert not np.allclose(c2, c1)

    # Each pod keeps c_i = c_i(0) + Δc_i(1) + Δc_i(2) in its home, readable by itself only; c
    # stays the mean of the c_i (every pod took part in both rounds).
    kept = []
    for pod_id, h in history.items():
        path = homes[pod_id] / f"{model_request.pk}.safetensors"
        assert path.stat().st_mode & 0o777 == 0o600
        c_i = control_from_bytes(path.read_bytes(), dim)
        assert np.allclose(c_i, h[0]["control_delta"] + h[1]["control_delta"], atol=1e-6)
        assert np.allclose(ControlVariates(homes[pod_id]).get(str(model_request.pk), dim), c_i)
        kept.append(c_i)
    assert np.allclose(np.mean(kept, axis=0), c2, atol=1e-5)
