"""Group value in the live rounds engine (issue 16), against simulated pods running the pod
agent (real SecAgg+ with one disjoint graph per group, real local training): each group's sum
is revealed on its own and equals its pods' plain sum, the candidates (the model without one
group) are served to the next round's pods and evaluated under the masks, the values are
recorded, and robust mode applies the next update to the chosen candidate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.utils import timezone
from safetensors.numpy import load as load_safetensors

from dataspace.celery import app as celery_app
from tests.training.rounds.test_engine import (
    InProcessTransport,
    SimPod,
    breast_data,
    capture_pod_messages,
    consenting_online_pod,
)
from training.models import ModelRequest, ModelVersion
from training.modelspec import validate_spec
from training.modelspec.vectors import flatten_state
from training.rounds import clock as rounds_clock
from training.rounds import opening
from training.rounds import valuation as engine_valuation
from training.rounds.valuation import candidate_blob

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _tasks_in_process() -> Iterator[None]:
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


class CandidateTransport(InProcessTransport):
    """The pod's downloads, candidates included (the view serves ``candidate_blob``); what
    was served is kept, by (base round, index), for the test to check."""

    served: dict[tuple[int, int], bytes] = {}

    def download(self, path: str) -> bytes:
        if "/candidates/" not in path:
            return super().download(path)
        from training.models import TrainingRound

        parts = path.rstrip("/").split("/")
        version = TrainingRound.objects.get(pk=int(parts[-3])).base_version
        assert version is not None
        found = candidate_blob(version, int(parts[-1]))
        assert found is not None
        CandidateTransport.served[(version.round_number, int(parts[-1]))] = found[0]
        return found[0]


def _vector(version: ModelVersion, spec: Any) -> np.ndarray:
    import torch

    with version.weights.open("rb") as handle:
        state = {k: torch.as_tensor(v) for k, v in load_safetensors(handle.read()).items()}
    return flatten_state(state, spec)


def test_grouped_rounds_reveal_group_sums_value_them_and_apply_the_robust_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataspace.demo import demo_request_spec, demo_weights
    from tests.factories import ProviderFactory, breast_category
    from training.services import model_request_create

    breast_category()
    spec = demo_request_spec(rounds=2, cohort_size=8, min_participants=3, local_epochs=2)
    spec["valuation"] = {"groups": 2, "robust": True, "margin": 0.0}
    model_request = model_request_create(
        provider=ProviderFactory(), spec=spec, weights=demo_weights(spec)
    )
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox)
    x, y = breast_data()
    sims: dict[Any, SimPod] = {}
    slot: dict[str, int] = {}
    for i in range(8):
        pod, key = consenting_online_pod(model_request, f"g{i}")
        # Group A: three pods whose labels are flipped; group B: five honest pods.
        rows = slice(i * 60, (i + 1) * 60)
        labels = 1 - y[rows] if i < 3 else y[rows]
        sims[pod.pk] = SimPod(pod, key, x[rows], labels)
        sims[pod.pk].worker.transport = CandidateTransport(pod)
        slot[str(pod.pk)] = 0 if i < 3 else 1
    # The slot is a keyed hash of the pod (tested in tests/modelspec/test_valuation.py); here
    # it is fixed so that the groups are known.
    monkeypatch.setattr(engine_valuation, "group_slot", lambda _r, pod_id, _g: slot[pod_id])

    assert opening.request_try_start(model_request) is not None
    tasks: list[dict[str, Any]] = []
    plains: dict[int, dict[Any, dict[str, Any]]] = {1: {}, 2: {}}
    while outbox:
        pod_id, message = outbox.pop(0)
        if "task" in message:
            tasks.append(message["task"])
        sims[pod_id].handle(message)
        if "task" in message:
            plains[int(message["task"]["base_round"]) + 1][pod_id] = sims[pod_id].plain
    model_request.refresh_from_db()
    assert model_request.status == ModelRequest.Status.COMPLETED
    parsed = validate_spec(model_request.spec)
    rounds = {r.number: r for r in model_request.rounds_run.filter(status="completed")}
    versions = {v.round_number: v for v in model_request.versions.all()}

    # Round 1: two groups, each with its own graph; no sum below the minimum.
    assert rounds[1].metrics["group_labels"] == ["A", "B"]
    metrics1 = versions[1].metrics
    assert [g["label"] for g in metrics1["groups"]] == ["A", "B"]
    assert [g["pods"] for g in metrics1["groups"]] == [3, 5]

    # The candidates: the same server step on the other group's sum, which equals that
    # group's plain sum of the pods' contributions (only group sums were revealed).
    base = _vector(versions[0], parsed)
    by_slot: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for pod_id, parts in plains[1].items():
        by_slot[slot[str(pod_id)]].append(parts)
    for index, other in ((0, 1), (1, 0)):
        blob = CandidateTransport.served[(1, index)]
        sha = versions[1].metrics["candidates"][index]["sha256"]
        assert hashlib.sha256(blob).hexdigest() == sha
        import torch

        candidate = flatten_state(
            {k: torch.as_tensor(v) for k, v in load_safetensors(blob).items()}, parsed
        )
        update = sum(p["update"] for p in by_slot[other])
        weight = sum(float(p["weight"][0]) for p in by_slot[other])
        assert np.allclose(candidate - base, update / weight, atol=1e-4)

    # Round 2's pods were given both candidates and evaluated them under the masks.
    second = [t for t in tasks if t["base_round"] == 1]
    assert len(second) == 8
    assert all([c["label"] for c in t["candidates"]] == ["A", "B"] for t in second)
    valuation = versions[2].metrics["valuation"]
    assert valuation["of_round"] == 1 and [v["label"] for v in valuation["values"]] == ["A", "B"]
    examples = sum(float(p["eval_examples"][0]) for p in plains[2].values())
    correct = [sum(float(p["value_correct"][i]) for p in plains[2].values()) for i in (0, 1)]
    full = sum(float(p["eval_correct"][0]) for p in plains[2].values()) / examples
    losses = [sum(float(p["value_loss"][i]) for p in plains[2].values()) for i in (0, 1)]
    full_loss = sum(float(p["eval_loss"][0]) for p in plains[2].values()) / examples
    for i, value in enumerate(valuation["values"]):
        relative = (losses[i] / examples - full_loss) / full_loss
        assert value["value"] == pytest.approx(relative, abs=1e-3)
        assert value["accuracy_change"] == pytest.approx(full - correct[i] / examples, abs=1e-3)
    # Robust: the most harmful group below −margin is left out, and round 2's update is
    # applied to the model without it (or to the full model when none is).
    harmful = [v for v in valuation["values"] if v["value"] < 0.0]
    expected = min(harmful, key=lambda v: v["value"])["label"] if harmful else None
    assert valuation["left_out"] == expected
    start = base if expected is None else None
    if expected is not None:
        blob = CandidateTransport.served[(1, ["A", "B"].index(expected))]
        import torch

        start = flatten_state(
            {k: torch.as_tensor(v) for k, v in load_safetensors(blob).items()}, parsed
        )
    else:
        start = _vector(versions[1], parsed)
    update = sum(p["update"] for p in plains[2].values())
    weight = sum(float(p["weight"][0]) for p in plains[2].values())
    assert np.allclose(_vector(versions[2], parsed) - start, update / weight, atol=1e-4)
    # Used, round 1's candidates are deleted; the last round's groups are not valued: no
    # candidates are stored for it.
    assert candidate_blob(versions[1], 0) is None and candidate_blob(versions[1], 1) is None
    assert "candidates" not in versions[2].metrics and versions[2].metrics["groups"]

    # The signed card shows each round's groups and values (and what was left out); its
    # signature still verifies, and the page renders them.
    from consent import receipts
    from pods.agent.consent import verify_signed
    from training.card import card_signed
    from training.card_page import card_html

    signed = card_signed(model_request)
    card = verify_signed(signed, receipts.public_jwks(), "card")
    shown = card["group_value"]
    assert (shown["groups"], shown["robust"], shown["min_pods_per_group"]) == (2, True, 3)
    first, last = shown["rounds"]
    assert first["round"] == 1 and first["valued_in_round"] == 2
    assert [g["value"] for g in first["groups"]] == [v["value"] for v in valuation["values"]]
    assert first["left_out"] == expected
    assert last["valued_in_round"] is None and all(g["value"] is None for g in last["groups"])
    assert any("Group values lag one round" in item for item in card["limitations"])
    page = card_html(signed)
    assert "Group value" in page and "not valued" in page and 'alt="Value of each group' in page


def test_a_group_that_falls_below_the_minimum_is_left_out_and_the_round_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataspace.demo import demo_request_spec, demo_weights
    from tests.factories import ProviderFactory, breast_category
    from training.services import model_request_create

    breast_category()
    spec = demo_request_spec(rounds=1, cohort_size=8, min_participants=3)
    spec["valuation"] = {"groups": 2}
    model_request = model_request_create(
        provider=ProviderFactory(), spec=spec, weights=demo_weights(spec)
    )
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox)
    x, y = breast_data()
    sims: dict[Any, SimPod] = {}
    slot: dict[str, int] = {}
    for i in range(8):
        pod, key = consenting_online_pod(model_request, f"s{i}")
        rows = slice(i * 60, (i + 1) * 60)
        sims[pod.pk] = SimPod(pod, key, x[rows], y[rows])
        slot[str(pod.pk)] = 0 if i < 3 else 1
    monkeypatch.setattr(engine_valuation, "group_slot", lambda _r, pod_id, _g: slot[pod_id])
    group_a = [pod_id for pod_id in sims if slot[str(pod_id)] == 0]
    sims[group_a[0]].drop_at("masked_input")  # group A: two left, below the minimum of three

    training_round = opening.request_try_start(model_request)
    assert training_round is not None
    clock = timezone.now()
    for _ in range(10):
        while outbox:
            pod_id, message = outbox.pop(0)
            sims[pod_id].handle(message)
        training_round.refresh_from_db()
        if training_round.status == "completed":
            break
        clock += timedelta(seconds=3600)  # past the stage's deadline: the silent pod is dropped
        rounds_clock.rounds_tick(clock)
    assert training_round.status == "completed"
    assert training_round.survivors == 5
    left = training_round.participants.filter(pod_id__in=group_a[1:])
    assert {(p.dropped_at_stage, p.drop_reason) for p in left} == {
        ("masked_input", "group_below_minimum")
    }
    assert not any(p.masked_input for p in left)  # their inputs are not kept, nor summed
    version = model_request.versions.get(round_number=1)
    assert version.metrics["groups"] == [{"label": "B", "pods": 5}]
    # The published model is FedAvg over group B alone.
    parsed = validate_spec(model_request.spec)
    base = _vector(model_request.versions.get(round_number=0), parsed)
    b_parts = [sims[p].plain for p in sims if slot[str(p)] == 1]
    update = sum(p["update"] for p in b_parts) / sum(float(p["weight"][0]) for p in b_parts)
    assert np.allclose(_vector(version, parsed) - base, update, atol=1e-4)


def test_a_cancelled_request_forgets_its_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 1 stored its candidates (the model without each group) for round 2 to value; the
    request is cancelled before round 2 completes: nothing will value them, they are deleted."""
    from django.core.files.storage import default_storage

    from dataspace.demo import demo_request_spec, demo_weights
    from tests.factories import ProviderFactory, breast_category
    from training.services import model_request_cancel, model_request_create

    breast_category()
    spec = demo_request_spec(rounds=3, cohort_size=8, min_participants=3)
    spec["valuation"] = {"groups": 2}
    model_request = model_request_create(
        provider=ProviderFactory(), spec=spec, weights=demo_weights(spec)
    )
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox)
    x, y = breast_data()
    sims: dict[Any, SimPod] = {}
    slot: dict[str, int] = {}
    for i in range(8):
        pod, key = consenting_online_pod(model_request, f"c{i}")
        rows = slice(i * 60, (i + 1) * 60)
        sims[pod.pk] = SimPod(pod, key, x[rows], y[rows])
        slot[str(pod.pk)] = 0 if i < 4 else 1
    monkeypatch.setattr(engine_valuation, "group_slot", lambda _r, pod_id, _g: slot[pod_id])
    assert opening.request_try_start(model_request) is not None
    while outbox and not model_request.versions.filter(round_number=1).exists():
        pod_id, message = outbox.pop(0)
        sims[pod_id].handle(message)
    version = model_request.versions.get(round_number=1)
    stored = version.metrics["candidates"]
    paths = [engine_valuation.candidate_path(model_request.pk, 1, str(c["label"])) for c in stored]
    assert len(paths) == 2 and all(default_storage.exists(p) for p in paths)
    model_request_cancel(model_request=model_request)
    assert not any(default_storage.exists(p) for p in paths)
