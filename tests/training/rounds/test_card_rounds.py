"""A round's explanation parts end up, decoded from the masked sum, on the signed model card;
the card verifies with the published key, tampering fails, and the portal shows it only to
people whose pods fed the model."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from consent import receipts
from pods.agent.consent import verify_signed
from tests.factories import UserFactory, open_request
from tests.training.rounds.test_engine import (
    SimPod,
    _tasks_in_process,  # noqa: F401 (fixture)
    breast_data,
    capture_pod_messages,
    consenting_online_pod,
)
from training.card import card_signed
from training.card_page import card_html
from training.models import ModelRequest, TrainingRound
from training.modelspec.explain import ranking
from training.rounds import clock as rounds_clock
from training.rounds import opening

pytestmark = pytest.mark.django_db(transaction=True)


def run_request(
    monkeypatch: pytest.MonkeyPatch, pods: int = 6
) -> tuple[ModelRequest, dict[Any, SimPod]]:
    x_all, y_all = breast_data()
    model_request = open_request(rounds=1, cohort_size=pods, min_participants=4)
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox)
    sims: dict[Any, SimPod] = {}
    for i in range(pods):
        pod, key = consenting_online_pod(model_request, f"p{i}")
        rows = slice(i * 70, (i + 1) * 70)
        sims[pod.pk] = SimPod(pod, key, x_all[rows], y_all[rows])
    first = opening.request_try_start(model_request)
    assert first is not None
    by_index = {p.index: sims[p.pod_id] for p in first.participants.all()}
    by_index[3].drop_at("masked_input")  # out of the sum
    clock = timezone.now()
    for _ in range(10):
        while outbox:
            pod_id, message = outbox.pop(0)
            sims[pod_id].handle(message)
        if TrainingRound.objects.filter(pk=first.pk, status="completed").exists():
            break
        clock += timezone.timedelta(seconds=3600)
        rounds_clock.rounds_tick(clock)
    model_request.refresh_from_db()
    assert model_request.status == ModelRequest.Status.COMPLETED
    return model_request, {i: s for i, s in by_index.items()}


def test_the_card_carries_the_decoded_sums_and_its_signature_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_request, by_index = run_request(monkeypatch)
    training_round = model_request.rounds_run.get(number=1)
    survivors = [
        by_index[p.index].plain for p in training_round.participants.all() if p.input_in_sum
    ]
    assert len(survivors) == 5
    explanation = training_round.metrics["explanation"]
    # What the service decoded is the plain sum of the survivors' parts (up to fixed point).
    plain_abs = sum(s["explain_abs"] for s in survivors)
    examples = sum(float(s["eval_examples"][0]) for s in survivors)
    features = model_request.spec["data"]["features"]
    decoded = np.array([explanation["feature_importance"][f] for f in features])
    assert np.allclose(decoded, plain_abs / examples, atol=1e-3)
    per_class_examples = sum(s["eval_class_examples"] for s in survivors)
    per_class_correct = sum(s["eval_class_correct"] for s in survivors)
    for entry in explanation["per_class"]:
        k = entry["class"]
        assert entry["accuracy"] == pytest.approx(per_class_correct[k] / per_class_examples[k])
        assert entry["examples"] % 10 == 0  # published coarsely

    signed = card_signed(model_request)
    card = verify_signed(signed, receipts.public_jwks(), "card")
    assert (
        card["model_details"]["model"]["sha256"]
        == model_request.versions.get(round_number=1).sha256
    )
    assert card["model_details"]["plan_hash"] == model_request.plan_hash
    assert card["intended_use"]["intended_use"] == model_request.spec["intended_use"]
    assert card["training_data"]["people_consented"] == 6
    assert card["training_data"]["cohort_per_round"] == [
        {"round": 1, "pods": 5, "examples": training_round.metrics["eval_examples"]}
    ]
    assert card["evaluation"]["rounds"][0]["per_class"]
    assert card["explanations"]["ranking"] == ranking(explanation["feature_importance"])
    assert "pod" not in {f["role"] for f in card["training_data"]["fields"]}

    for tamper in (
        lambda c: c["evaluation"]["rounds"][0].update(accuracy=0.999),
        lambda c: c["intended_use"]["out_of_scope_uses"].pop(),
        lambda c: c["model_details"]["model"].update(sha256="0" * 64),
    ):
        forged = copy.deepcopy(signed)
        tamper(forged["card"])
        with pytest.raises(ValueError, match="does not verify"):
            verify_signed(forged, receipts.public_jwks(), "card")

    page = card_html(signed)
    assert page.count('src="data:image/png;base64,') == 3
    assert "<script" not in page
    assert ranking(explanation["feature_importance"])[0] in page

    # The portal: a person whose pod fed the model sees the card; anyone else gets a 404.
    fed = next(p for p in training_round.participants.all() if p.input_in_sum)
    left_out = training_round.participants.get(index=next(i for i in by_index if i == 3))
    url = f"/participation/{model_request.pk}/model-card/"
    client = Client()
    client.force_login(fed.pod.owner)
    response = client.get(url)
    assert response.status_code == 200
    assert model_request.spec["intended_use"] in response.content.decode()
    assert url in client.get("/participation/").content.decode()
    for user in (left_out.pod.owner, UserFactory()):
        client.force_login(user)
        assert client.get(url).status_code == 404
