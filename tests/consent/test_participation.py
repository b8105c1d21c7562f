"""My participation: the rounds a person's pods were drawn for, in the portal and the export."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from pods.agent.plan import PlanPrivacy
from pods.models import Pod
from tests.factories import PodFactory, UserFactory, open_request
from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound
from training.modelspec import validate_spec
from training.secagg.dp import epsilon

pytestmark = pytest.mark.django_db

DP = {"clip_norm": 1.0, "noise_multiplier": 1.1, "target_epsilon": 8.0, "delta": 1e-5}
SECRET_DIGEST = "f" * 64


@pytest.fixture
def person(client: Client) -> User:
    user = UserFactory()
    client.force_login(user)
    return user


def training(**overrides: Any) -> ModelRequest:
    model_request = open_request(**overrides)
    ModelRequest.objects.filter(pk=model_request.pk).update(status=ModelRequest.Status.TRAINING)
    model_request.refresh_from_db()
    return model_request


def run_round(
    model_request: ModelRequest,
    number: int,
    *,
    attempt: int = 1,
    status: str = TrainingRound.Status.COMPLETED,
    epsilon: float | None = None,
) -> TrainingRound:
    """A round as the orchestrator leaves it; a completed one has its model version."""
    training_round = TrainingRound.objects.create(
        model_request=model_request,
        number=number,
        attempt=attempt,
        status=status,
        epsilon=epsilon,
        secagg_state={"keys": "server-side state that is never shown"},
    )
    if status == TrainingRound.Status.COMPLETED:
        ModelVersion.objects.create(
            model_request=model_request,
            round_number=number,
            weights=f"requests/{model_request.pk}/round-{number:04d}.safetensors",
            sha256="0" * 64,
            participants=2,
            epsilon=epsilon,
        )
    return training_round


def take_part(
    training_round: TrainingRound,
    pod: Pod,
    *,
    stage: str = RoundParticipant.Stage.UNMASKED,
    dropped_at: str = "",
    reason: str = "",
) -> RoundParticipant:
    index = training_round.participants.count() + 1
    return RoundParticipant.objects.create(
        round=training_round,
        pod=pod,
        user=pod.owner,
        index=index,
        stage_reached=stage,
        dropped_at_stage=dropped_at,
        drop_reason=reason,
        masked_sha256=SECRET_DIGEST,
    )


def page(client: Client) -> str:
    response = client.get(reverse("portal:participation"))
    assert response.status_code == 200
    return response.content.decode()


def export(client: Client) -> dict[str, Any]:
    response = client.get(reverse("portal:export"))
    assert response.status_code == 200
    return json.loads(response.content)  # type: ignore[no-any-return]


def test_participation_requires_login(client: Client) -> None:
    response = client.get("/participation/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_nobody_has_participated_yet(client: Client, person: User) -> None:
    body = page(client)
    assert "<h1>My participation</h1>" in body
    assert "None of your pods has taken part in a training round yet." in body


def test_contributed_round_fed_its_model_version(client: Client, person: User) -> None:
    # given a request whose round 1 completed with my pod, and round 2 aborted then retried
    model_request = training(title="Screening model")
    pod = PodFactory(owner=person, name="Kitchen tablet")
    take_part(run_round(model_request, 1), pod)
    take_part(run_round(model_request, 2, status=TrainingRound.Status.ABORTED), pod)
    take_part(run_round(model_request, 2, attempt=2), pod)
    # when I open my participation
    body = page(client)
    # then each round is listed with its attempt, status and the version it fed
    assert "Screening model" in body
    assert model_request.provider.name in body
    assert "Kitchen tablet" in body
    assert '<th scope="row">Round 1, attempt 1</th>' in body
    assert '<th scope="row">Round 2, attempt 2</th>' in body
    assert "fed model version 1" in body
    assert "fed model version 2" in body
    assert "No: the round was stopped" in body
    assert "<caption" in body and '<th scope="col">Round status</th>' in body
    assert "2 of 3 rounds" in body
    assert "no differential privacy" in body
    assert SECRET_DIGEST not in body and "server-side state" not in body


def test_dropped_round_shows_stage_and_reason_in_plain_words(client: Client, person: User) -> None:
    model_request = training()
    pod = PodFactory(owner=person)
    take_part(
        run_round(model_request, 1),
        pod,
        stage=RoundParticipant.Stage.SHARED,
        dropped_at="masked_input",
        reason="silent",
    )
    take_part(
        run_round(model_request, 2),
        pod,
        stage=RoundParticipant.Stage.SELECTED,
        dropped_at="advertise_keys",
        reason="declined:plan_mismatch",
    )
    take_part(
        run_round(model_request, 3),
        pod,
        stage=RoundParticipant.Stage.MASKED,
        dropped_at="unmask",
        reason="out_of_order",
    )
    body = page(client)
    assert "Dropped while masked updates were collected." in body
    assert "Your pod did not answer in time" in body
    # Dropped while the sum was revealed: its update was already in the sum, and said so.
    assert "Dropped while the group’s sum was revealed." in body
    assert "fed model version 3" in body
    assert "Dropped while pods exchanged keys." in body
    assert "Your pod declined the task: the task was not the plan you agreed to." in body
    assert "Shared key pieces with its neighbours" in body
    assert "fed model version 1" not in body and "fed model version 2" not in body
    assert "1 of 3 rounds" in body


def test_other_peoples_participation_is_not_shown(client: Client, person: User) -> None:
    # given another person's pod in my round and in a request I never joined
    mine = training(title="Request I joined")
    theirs = training(title="Request only they joined")
    other = UserFactory()
    their_pod = PodFactory(owner=other, name="Their secret phone")
    shared_round = run_round(mine, 1)
    take_part(shared_round, PodFactory(owner=person, name="My phone"))
    take_part(shared_round, their_pod, dropped_at="unmask", reason="training_paused")
    take_part(run_round(theirs, 1), their_pod)
    # then neither their pod nor their request appears, on the page or in my export
    body = page(client)
    assert "Request I joined" in body and "My phone" in body
    assert "Request only they joined" not in body
    assert "Their secret phone" not in body
    assert "You paused all training" not in body
    data = export(client)
    assert [p["title"] for p in data["participation"]] == ["Request I joined"]
    assert len(data["participation"][0]["rounds"]) == 1
    assert data["participation"][0]["rounds"][0]["contributed"] is True


def test_dp_epsilon_is_that_of_the_rounds_i_contributed_to(client: Client, person: User) -> None:
    model_request = training(title="Private model", dp=DP)
    pod = PodFactory(owner=person)
    take_part(run_round(model_request, 1, epsilon=0.5), pod)
    take_part(run_round(model_request, 2, epsilon=0.9), pod)
    # round 3 published without me (I withdrew before its inputs were collected): its ε is
    # not what was spent on me
    take_part(
        run_round(model_request, 3, epsilon=1.2),
        pod,
        stage=RoundParticipant.Stage.SHARED,
        dropped_at="masked_input",
        reason="consent_withdrawn",
    )
    # Two rounds of my data at σ = 1.1, δ = 1e-5, counted with q = 1 — what my pod's own
    # ledger counts — not the request's cumulative ε after round 3.
    mine = epsilon(1.1, 1.0, 2, 1e-5)
    body = page(client)
    assert f"ε = {mine:.2f} of a budget of ε = 8.00" in body
    assert "ε = 1.20" not in body
    assert "You withdrew your consent." in body
    assert "no differential privacy" not in body
    entry = export(client)["participation"][0]
    assert entry["differential_privacy"] is True
    assert entry["epsilon_spent"] == pytest.approx(mine)
    assert entry["epsilon_spent"] == pytest.approx(
        PlanPrivacy.of(validate_spec(model_request.spec)).epsilon_after(2)
    )
    assert [r["epsilon"] for r in entry["rounds"]] == [0.5, 0.9, None]


def test_dp_request_before_any_contribution_spent_nothing(client: Client, person: User) -> None:
    model_request = training(dp=DP)
    take_part(
        run_round(model_request, 1, status=TrainingRound.Status.COLLECTING),
        PodFactory(owner=person),
        stage=RoundParticipant.Stage.SHARED,
    )
    body = page(client)
    assert "none yet: no published model contains your update" in body
    assert "Not yet" in body
    assert "In progress: collecting masked updates" in body


def test_export_contains_participation(client: Client, person: User) -> None:
    model_request = training(title="Exported model")
    pod = PodFactory(owner=person)
    take_part(run_round(model_request, 1), pod)
    take_part(
        run_round(model_request, 2, status=TrainingRound.Status.ABORTED),
        pod,
        stage=RoundParticipant.Stage.ADVERTISED,
        dropped_at="share_keys",
        reason="silent",
    )
    response = client.get(reverse("portal:export"))
    raw = response.content.decode()
    data = json.loads(raw)
    assert data["participation"] == [
        {
            "request": str(model_request.pk),
            "title": "Exported model",
            "provider": model_request.provider.name,
            "differential_privacy": False,
            "epsilon_spent": None,
            "contributed_rounds": 1,
            "rounds": [
                {
                    "number": 1,
                    "attempt": 1,
                    "status": "completed",
                    "stage_reached": "unmask",
                    "dropped_at_stage": None,
                    "drop_reason": None,
                    "drop_reason_text": None,
                    "contributed": True,
                    "model_version": 1,
                    "epsilon": None,
                },
                {
                    "number": 2,
                    "attempt": 1,
                    "status": "aborted",
                    "stage_reached": "advertise_keys",
                    "dropped_at_stage": "share_keys",
                    "drop_reason": "silent",
                    "drop_reason_text": (
                        "Your pod did not answer in time (it may have been offline)."
                    ),
                    "contributed": False,
                    "model_version": None,
                    "epsilon": None,
                },
            ],
        }
    ]
    assert SECRET_DIGEST not in raw and "server-side state" not in raw
    assert pod.fingerprint not in raw


def _history(person: User, requests: int, rounds: int) -> None:
    for r in range(requests):
        model_request = training(title=f"Request {r}", dp=DP if r % 2 else None)
        pod = PodFactory(owner=person)
        for n in range(1, rounds + 1):
            take_part(run_round(model_request, n, epsilon=0.1 * n if r % 2 else None), pod)


def test_query_count_does_not_grow_with_history(
    client: Client, person: User, django_assert_max_num_queries: Any
) -> None:
    # session, user, participants (with round, request, provider, pod), model versions
    _history(person, requests=1, rounds=1)
    with django_assert_max_num_queries(4):
        page(client)
    _history(person, requests=4, rounds=6)
    with django_assert_max_num_queries(4):
        body = page(client)
    assert body.count("fed model version") == 25
