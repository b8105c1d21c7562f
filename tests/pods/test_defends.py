"""The pod defends its person against a dishonest service (issue: "the pod defends").

Each attack is a service-side message a dishonest service could send, built from the honest
first stage of a real round (the real rounds engine, real signed receipts), and answered by the
pod's real :class:`pods.agent.rounds.RoundWorker`: the pod declines with a reason code and
nothing of its data leaves it.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from consent import receipts
from dataspace.demo import breast_features
from pods.agent.data import MemoryData
from pods.agent.keylog import KeyLogVerifier
from pods.agent.plan import PlanPrivacy, PrivacyLedger
from pods.agent.protocol import on_pinned_origin
from tests.factories import open_request
from tests.training.rounds.test_engine import (
    InProcessTransport,
    RecordingWorker,
    breast_data,
    capture_pod_messages,
    consenting_online_pod,
)
from training.models import ModelRequest, TrainingRound
from training.modelspec import load_weights, validate_spec
from training.modelspec.trainer import train_local
from training.rounds import answers, model_update, opening
from training.secagg import crypto
from training.secagg.client import Floors
from training.secagg.dp import epsilon
from training.secagg.encoding import clip_l2
from training.secagg.errors import FloorError
from training.secagg.wire import b64

pytestmark = pytest.mark.django_db(transaction=True)

DP = {"clip_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 5.0, "delta": 1e-5}


class Pods:
    """A request's first round opened with ``size`` consenting pods; each pod's worker and
    the honest first-stage message the service sent it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, size: int, **request: Any) -> None:
        self.model_request: ModelRequest = open_request(
            rounds=3, cohort_size=size, min_participants=size, **request
        )
        outbox: list[tuple[Any, dict[str, Any]]] = []
        capture_pod_messages(monkeypatch, outbox)
        x, y = breast_data()
        self.data: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        self.workers: dict[Any, RecordingWorker] = {}
        for i in range(size):
            pod, key = consenting_online_pod(self.model_request, f"p{i}")
            xi, yi = x[i * 40 : (i + 1) * 40], y[i * 40 : (i + 1) * 40]
            self.data[pod.pk] = (xi, yi)
            self.workers[pod.pk] = self._worker(pod, key, xi, yi)
        opened = opening.request_try_start(self.model_request)
        assert opened is not None
        self.round: TrainingRound = opened
        self.first = dict(outbox)
        self.outbox = outbox

    @staticmethod
    def _worker(pod: Any, key: Ed25519PrivateKey, x: np.ndarray, y: np.ndarray) -> RecordingWorker:
        columns = {name: x[:, i] for i, name in enumerate(breast_features())}
        return RecordingWorker(
            identity=key,
            transport=InProcessTransport(pod),
            data=MemoryData("health.breast_screening", {**columns, "diagnosis": y}),
            pinned_keys=receipts.public_jwks(),
        )

    def one(self) -> tuple[RecordingWorker, dict[str, Any], Any]:
        pod_id = next(iter(self.first))
        return self.workers[pod_id], copy.deepcopy(self.first[pod_id]), pod_id


def declined(reply: dict[str, Any] | None) -> str:
    assert reply is not None and reply["type"] == "round.decline", reply
    return str(reply["code"])


def test_a_one_neighbour_round_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service names one neighbour (a key it made) and threshold 1: sharing the self-mask
    seed and masking key with it would let the service unmask the pod's exact update."""
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    message["payload"]["neighbours"] = [99]
    message["payload"]["threshold"] = 1
    assert declined(worker.handle(message)) == "neighbourhood_below_plan"
    assert worker.transport.uploads == 0  # type: ignore[attr-defined]
    assert worker.rounds == {}  # no key advertised, no round state kept


def test_a_neighbourhood_smaller_than_the_plan_is_declined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plan's minimum cohort (4) gives every pod 3 neighbours; 2 (a majority threshold of
    them, so the old checks passed) is refused."""
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    message["payload"]["neighbours"] = message["payload"]["neighbours"][:2]
    message["payload"]["threshold"] = 2
    assert declined(worker.handle(message)) == "neighbourhood_below_plan"


def test_the_honest_round_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same pod answers the honest message: the floors are what the plan implies, no more."""
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    reply = worker.handle(message)
    assert reply is not None and reply["type"] == "round.reply"
    assert set(reply["payload"]) == {"c_pk", "s_pk", "signature", "key_log_size"}


def test_stripped_dp_settings_in_the_task_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task says no DP, a huge survivor count (a tiny noise share) and a huge clip: the pod
    takes the plan's σ, clip and minimum survivors from the spec its owner consented to."""
    pods = Pods(monkeypatch, 4, dp=DP)
    worker, message, pod_id = pods.one()
    task = message["task"]
    task.update({"dp": None, "min_survivors": 10**9, "clip_norm": 1e6, "weighting": "examples"})
    reply = worker.handle(message)
    assert reply is not None and reply["type"] == "round.reply"
    spec = validate_spec(pods.model_request.spec)
    base = pods.round.base_version
    assert base is not None
    state = load_weights(base.weights.open("rb").read(), spec)
    x, y = pods.data[pod_id]
    result = train_local(spec, state, x, y.astype(float), seed=int(task["seed"]))
    noise = worker.plain["update"] - clip_l2(result.update, DP["clip_norm"])
    expected = DP["noise_multiplier"] * DP["clip_norm"] / np.sqrt(4)  # σC/√(plan minimum)
    assert 0.85 * expected < float(np.std(noise)) < 1.15 * expected
    assert float(worker.plain["weight"][0]) == 1.0  # uniform weighting under DP


def test_a_url_outside_the_pinned_origin_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task names another host for the weights: the pod's token would go there."""
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    calls: list[str] = []
    transport = worker.transport
    monkeypatch.setattr(transport, "download", lambda path: calls.append(path) or b"")
    message["task"]["weights_url"] = "https://collector.example/steal"
    assert declined(worker.handle(message)) == "origin_not_pinned"
    assert calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x",
        "//evil.example/x",
        "http:/evil",
        "/api/v1/pod/rounds/1/weights\\@evil",
        "/a b",
        "/a\nb",
        "evil.example/x",
        "",
    ],
)
def test_only_plain_paths_count_as_the_pinned_origin(url: str) -> None:
    assert not on_pinned_origin(url)
    assert on_pinned_origin("/api/v1/pod/rounds/12/masked-input")


def test_the_pod_refuses_a_round_past_its_owners_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """ε after one round at σ = 1 (q = 1, δ = 1e-5) is 4.73 and after two 7.08; the owner agreed
    to 5. The pod's own ledger says its data fed one round already: it declines the next."""
    pods = Pods(monkeypatch, 4, dp=DP)
    worker, message, _ = pods.one()
    worker.ledger = PrivacyLedger()
    worker.ledger.record(str(pods.model_request.pk), 10_000)
    assert declined(worker.handle(message)) == "privacy_budget_exhausted"
    fresh, message, _ = pods.one()
    fresh.ledger = PrivacyLedger()
    assert fresh.handle(message)["type"] == "round.reply"  # type: ignore[index]


def test_the_ledger_persists_and_counts_a_round_once(tmp_path: Any) -> None:
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(path)
    ledger.record("r", 1)
    ledger.record("r", 1)
    ledger.record("r", 2)
    assert PrivacyLedger(path).rounds("r") == 2
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_service_accounts_epsilon_without_subsampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rounds completed with a cohort drawn from a pool ten times larger: the service still
    counts q = 1 (it knows who took part), the same as each pod's ledger."""
    pods = Pods(monkeypatch, 4, dp=DP)
    model_request = pods.model_request
    for number in (1, 2):
        TrainingRound.objects.create(
            model_request=model_request,
            number=number + 10,
            status=TrainingRound.Status.COMPLETED,
            metrics={"sample_rate": 0.1},
        )
    spent, over = model_update._privacy(model_request)
    assert spent == pytest.approx(epsilon(1.0, 1.0, 3, 1e-5))
    plan = PlanPrivacy.of(validate_spec(model_request.spec))
    assert spent == pytest.approx(plan.epsilon_after(3))
    assert over  # a fourth round would exceed ε = 5


@given(
    neighbours=st.integers(1, 40),
    threshold=st.integers(1, 40),
    minimum=st.integers(2, 200),
    fraction=st.floats(0.51, 1.0),
)
def test_floors_refuse_whatever_the_plan_does_not_imply(
    neighbours: int, threshold: int, minimum: int, fraction: float
) -> None:
    """For any neighbourhood/threshold the service names, the pod accepts only at least the
    plan's smallest neighbourhood and at least max(2, its fraction of it)."""
    from training.secagg.graph import choose_k, choose_t

    floors = Floors(
        min_neighbours=max(2, choose_k(max(3, minimum))),
        threshold_fraction=fraction,
        min_threshold=2,
    )
    ok = neighbours >= floors.min_neighbours and threshold >= max(2, choose_t(neighbours, fraction))
    try:
        floors.check_neighbourhood(neighbours, threshold)
    except FloorError:
        assert not ok
    else:
        assert ok


def test_a_neighbour_key_the_log_does_not_hold_is_declined(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The service swaps a neighbour's identity key for one it made (re-signing the advert, so
    the SecAgg signature check alone would pass): the key log does not vouch for it."""
    pods = Pods(monkeypatch, 4)
    for pod_id, worker in pods.workers.items():
        worker.key_log = KeyLogVerifier(tmp_path / f"{pod_id}.json", receipts.public_jwks())
    for pod_id, message in pods.first.items():
        reply = pods.workers[pod_id].handle(message)
        assert reply is not None and reply["payload"]["key_log_size"] == 0
        answers.round_reply(
            pod_id=pod_id, round_id=pods.round.pk, stage="advertise_keys", payload=reply["payload"]
        )
    share = {pod_id: m for pod_id, m in pods.outbox if m["stage"] == "share_keys"}
    honest_id, attacked_id = list(share)[:2]
    honest = pods.workers[honest_id].handle(share[honest_id])
    assert honest is not None and honest["type"] == "round.reply"  # the log vouches for all
    message = copy.deepcopy(share[attacked_id])
    v, advert = next(iter(message["payload"]["adverts"].items()))
    made_up = Ed25519PrivateKey.generate()
    c_pk, s_pk = base64.b64decode(advert["c_pk"]), base64.b64decode(advert["s_pk"])
    round_id = pods.round.secagg_state["round_id"].encode()
    advert["identity_key"] = b64(made_up.public_key().public_bytes_raw())
    advert["signature"] = b64(crypto.sign_advert(made_up, round_id, int(v), c_pk, s_pk))
    assert declined(pods.workers[attacked_id].handle(message)) == "key_not_in_log"


def test_simulated_pods_never_share_a_cohort_with_a_real_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One honest person plus nine operator-made pods: the Sybil cohort that would reveal the
    honest pod's update from the sum is never drawn."""
    from pods.models import Pod
    from training.rounds.cohort import eligible_pods

    model_request = open_request(rounds=1, cohort_size=10, min_participants=4)
    real, _ = consenting_online_pod(model_request, "person")
    made = []
    for i in range(9):
        pod, _ = consenting_online_pod(model_request, f"sybil-{i}")
        made.append(pod.pk)
    Pod.objects.filter(pk__in=made).update(simulated=True)
    drawn = {p.pk for p in eligible_pods(model_request, timezone.now())}
    assert drawn == set(made)  # the simulated ones may train together, without the person
    for i in range(3):
        consenting_online_pod(model_request, f"person-{i}")
    drawn = eligible_pods(model_request, timezone.now())
    assert len(drawn) == 4 and not any(p.simulated for p in drawn) and real in drawn


def test_a_task_the_pod_cannot_train_is_declined_and_the_pod_keeps_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A label outside the model's two outputs (a data set the plan does not fit) raised
    IndexError out of the worker before: now the pod declines and answers the next task."""
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    columns = dict(worker.data.columns)  # type: ignore[attr-defined]
    worker.data = MemoryData(
        "health.breast_screening", {**columns, "diagnosis": columns["diagnosis"] + 8}
    )
    assert declined(worker.handle(message)) == "training_failed"
    worker.data = MemoryData("health.breast_screening", columns)
    again = copy.deepcopy(pods.first[next(iter(pods.first))])
    again["round"] = message["round"]
    reply = worker.handle(again)
    assert reply is not None and reply["type"] == "round.reply"
