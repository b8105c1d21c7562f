"""Rounds end to end in one process: the orchestrator against simulated pods (real SecAgg+,
real local training), with dropouts at two stages and a withdrawal between rounds."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from safetensors.torch import load as load_safetensors
from sklearn.datasets import load_breast_cancer

from consent.services import consent_grant, consent_withdraw
from pods.models import Pod, key_fingerprint
from tests.factories import UserFactory, open_request
from training import orchestrator
from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound
from training.modelspec import validate_spec
from training.modelspec.trainer import evaluate, train_local
from training.secagg.client import ClientRound
from training.secagg.encoding import clip_l2
from training.uploads import masked_input_store

pytestmark = pytest.mark.django_db(transaction=True)


class SimPod:
    def __init__(self, pod: Pod, key: Ed25519PrivateKey, x: np.ndarray, y: np.ndarray) -> None:
        self.pod, self.key, self.x, self.y = pod, key, x, y
        self.client: ClientRound | None = None
        self.task: dict[str, Any] = {}
        self.drop_at: str | None = None
        self.plain: dict[str, np.ndarray] = {}

    def handle(self, message: dict[str, Any]) -> None:
        if message["type"] != "round.stage":
            return
        stage = message["stage"]
        if stage == self.drop_at:
            return  # the pod vanished
        if stage == "advertise_keys":
            self.task = message["task"]
            self.client = ClientRound(self.key)
            payload = self.client.advertise_keys(message["payload"])
        elif stage == "share_keys":
            assert self.client is not None
            payload = self.client.share_keys(message["payload"])
        elif stage == "masked_input":
            assert self.client is not None
            version = TrainingRound.objects.get(pk=message["round"]).base_version
            assert version is not None
            state = load_safetensors(version.weights.open("rb").read())
            spec = validate_spec(self.task["spec"])
            result = train_local(spec, state, self.x, self.y, seed=self.task["seed"])
            weight = min(result.num_examples, self.task["max_examples"]) / self.task["max_examples"]
            self.plain = {
                "update": weight * clip_l2(result.update, self.task["clip_norm"]),
                "weight": np.array([weight]),
            }
            parts = {
                **self.plain,
                "eval_loss": np.array([result.evaluation.loss_sum]),
                "eval_correct": np.array([float(result.evaluation.correct)]),
                "eval_examples": np.array([float(result.evaluation.examples)]),
            }
            vector = self.client.masked_input(message["payload"], parts)
            body = vector.astype("<u4").tobytes()
            import hashlib

            masked_input_store(
                pod=self.pod,
                round_id=message["round"],
                stream=io.BytesIO(body),
                length=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
            )
            return
        else:
            assert self.client is not None
            payload = self.client.unmask(message["payload"])
        orchestrator.round_reply(
            pod=self.pod, round_id=message["round"], stage=stage, payload=payload
        )


def test_rounds_with_dropouts_and_withdrawal(monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_breast_cancer()
    x_all = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    y_all = data.target
    model_request = open_request(rounds=2, cohort_size=8, min_participants=4)
    outbox: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(
        orchestrator, "deliver", lambda pod_id, message: outbox.append((pod_id, message))
    )

    pods: dict[Any, SimPod] = {}
    for i in range(8):
        user = UserFactory()
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        pod = Pod.objects.create(
            owner=user,
            name=f"p{i}",
            public_key=public,
            fingerprint=key_fingerprint(public),
            channel_name=f"chan{i}",
            last_seen_at=timezone.now(),
            categories_held=[{"slug": "health.breast_screening", "count": 10}],
        )
        consent_grant(user=user, model_request=model_request, pod=pod)
        pods[pod.pk] = SimPod(pod, key, x_all[i * 60 : (i + 1) * 60], y_all[i * 60 : (i + 1) * 60])

    first = orchestrator.request_try_start(model_request)
    assert first is not None and first.cohort_size == 8
    by_index = {p.index: pods[p.pod_id] for p in first.participants.all()}
    by_index[2].drop_at = "masked_input"
    by_index[5].drop_at = "unmask"

    def pump() -> None:
        while outbox:
            pod_id, message = outbox.pop(0)
            pods[pod_id].handle(message)

    # Round 1 runs to completion while two pods vanish mid-round.
    clock = timezone.now()

    def later() -> Any:
        nonlocal clock
        clock += timezone.timedelta(seconds=3600)  # past every stage deadline
        return clock

    pump_until = 0
    while (
        TrainingRound.objects.filter(pk=first.pk, status=TrainingRound.Status.COMPLETED).count()
        == 0
    ):
        pump()
        orchestrator.rounds_tick(later())
        pump_until += 1
        assert pump_until < 10
    first.refresh_from_db()
    survivors = [p for p in first.participants.order_by("index") if not p.dropped]
    assert len(survivors) == 7 and first.survivors == 7  # dropped before masking: out of the sum
    assert {p.index: p.dropped_at_stage for p in first.participants.all() if p.dropped} == {
        2: "masked_input"
    }
    assert not any(p.masked_input for p in first.participants.all())  # masked inputs deleted

    # The new global model is the base plus the exact FedAvg of survivors (up to fixed point).
    base = load_safetensors(first.base_version.weights.open("rb").read())  # type: ignore[union-attr]
    new = load_safetensors(
        ModelVersion.objects.get(model_request=model_request, round_number=1)
        .weights.open("rb")
        .read()
    )
    spec = validate_spec(model_request.spec)
    from training.modelspec.vectors import flatten_state

    contributions = [by_index[p.index].plain for p in survivors]
    expected = sum(c["update"] for c in contributions) / sum(
        float(c["weight"][0]) for c in contributions
    )
    delta = flatten_state(new, spec) - flatten_state(base, spec)
    assert np.allclose(delta, expected, atol=1e-4)
    assert first.metrics["eval_examples"] == 7 * 12

    # One person withdraws: their pod is in no later cohort.
    leaver = by_index[1].pod
    consent = leaver.consents.get(model_request=model_request)
    consent_withdraw(user=leaver.owner, consent=consent)
    pump()
    orchestrator.rounds_tick(later())
    pump()
    for _ in range(6):
        orchestrator.rounds_tick(later())
        pump()
    model_request.refresh_from_db()
    assert model_request.status == ModelRequest.Status.COMPLETED
    second = TrainingRound.objects.get(model_request=model_request, number=2, status="completed")
    assert not RoundParticipant.objects.filter(round=second, pod=leaver).exists()
    final = load_safetensors(
        model_request.versions.order_by("-round_number").first().weights.open("rb").read()
    )  # type: ignore[union-attr]
    initial = load_safetensors(model_request.weights.open("rb").read())
    held_out = (x_all[480:], y_all[480:])  # no pod holds these rows
    assert evaluate(spec, final, *held_out).loss_sum < evaluate(spec, initial, *held_out).loss_sum
    assert torch.is_tensor(final["0.weight"])
