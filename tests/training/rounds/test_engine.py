"""Rounds end to end in one process: the rounds engine against simulated pods (real SecAgg+,
real local training), with dropouts at two stages and a withdrawal between rounds."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from safetensors.torch import load as load_safetensors
from sklearn.datasets import load_breast_cancer

from consent import receipts
from consent.models import Consent
from consent.services import consent_grant, consent_withdraw
from dataspace import delivery
from dataspace.celery import app as celery_app
from dataspace.demo import breast_features
from pods.agent.consent import verify_receipt
from pods.agent.data import MemoryData
from pods.agent.protocol import canonical_json, read_masked_frame
from pods.agent.rounds import RoundWorker, Vanish
from pods.key_log import key_log_append
from pods.models import Pod, key_fingerprint
from tests.factories import PodFactory, UserFactory, open_request
from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound
from training.modelspec import validate_spec
from training.modelspec.trainer import evaluate
from training.rounds import answers, closing, messages, opening, uploads
from training.rounds import clock as rounds_clock

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _tasks_in_process() -> Iterator[None]:
    """Aggregation tasks run inline here; the end-to-end test runs them on a Celery worker."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


class InProcessTransport:
    """The pod's HTTP calls, answered by the same service functions the views call."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.receipts_fetched = 0
        self.uploads = 0

    def receipt(self, request_id: str) -> dict[str, Any]:
        self.receipts_fetched += 1
        consent = Consent.objects.get(user=self.pod.owner, model_request_id=request_id)
        return receipts.receipt_signed(consent)

    def download(self, path: str) -> bytes:
        round_id = int(path.rstrip("/").split("/")[-2])
        version = TrainingRound.objects.get(pk=round_id).base_version
        assert version is not None
        served = version.control if path.endswith("/control") else version.weights
        with served.open("rb") as handle:
            return bytes(handle.read())

    def upload(self, path: str, body: bytes) -> None:
        self.uploads += 1
        uploads.masked_input_store(
            pod=self.pod,
            round_id=int(path.rstrip("/").split("/")[-2]),
            stream=io.BytesIO(body),
            length=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        )


class RecordingWorker(RoundWorker):
    """The pod agent's round worker; the test keeps each plain contribution to check the sum."""

    plain: dict[str, Any]

    def _prepare(self, task: Any, payload: Any, offered: Any = None) -> Any:
        plan, parts = super()._prepare(task, payload, offered)
        self.plain = {k: v.copy() for k, v in parts.items()}
        self.history = [*getattr(self, "history", []), self.plain]  # one per round
        return plan, parts


def consenting_online_pod(model_request: ModelRequest, name: str) -> tuple[Pod, Ed25519PrivateKey]:
    """A person's pod holding breast-screening records, online, whose owner consented."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    pod = Pod.objects.create(
        owner=UserFactory(),
        name=name,
        public_key=public,
        fingerprint=key_fingerprint(public),
        channel_name=f"chan-{name}",
        last_seen_at=timezone.now(),
        categories_held=[{"slug": "health.breast_screening", "count": 10}],
    )
    key_log_append(pod=pod)
    consent_grant(user=pod.owner, model_request=model_request, pod=pod)
    return pod, key


def breast_data() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32), data.target


@dataclass
class Opened:
    round: TrainingRound
    outbox: list[tuple[Any, dict[str, Any]]]
    pods: dict[Any, tuple[Pod, Ed25519PrivateKey]]

    def sims(self, kind: type[SimPod] | None = None) -> dict[Any, Any]:
        """A simulated pod (``kind``, SimPod by default) per pod of the round, each holding its
        own 60 breast-screening records."""
        x, y = breast_data()
        make = kind or SimPod
        return {
            pod_id: make(pod, key, x[i * 60 : (i + 1) * 60], y[i * 60 : (i + 1) * 60])
            for i, (pod_id, (pod, key)) in enumerate(self.pods.items())
        }


def capture_pod_messages(
    monkeypatch: pytest.MonkeyPatch, outbox: list[tuple[Any, dict[str, Any]]], deliveries: int = 1
) -> None:
    """What the engine sends to pods lands in ``outbox`` as (pod id, message), each message
    ``deliveries`` times; other live events (progress) are dropped."""

    def capture(sends: list[tuple[str, dict[str, Any]]]) -> None:
        for group, event in sends:
            if event["type"] == "pod.send":
                pod_id = uuid.UUID(group.removeprefix("pod."))
                outbox.extend([(pod_id, event["message"])] * deliveries)

    monkeypatch.setattr(delivery, "dispatch_all", capture)


def open_round(
    monkeypatch: pytest.MonkeyPatch, size: int, *, min_participants: int = 0, deliveries: int = 1
) -> Opened:
    """A request whose first round is open with ``size`` consenting online pods; what is sent
    to the pods lands in the outbox (each message ``deliveries`` times)."""
    model_request = open_request(
        rounds=1, cohort_size=size, min_participants=min_participants or size
    )
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox, deliveries)
    pods = {}
    for i in range(size):
        pod, key = consenting_online_pod(model_request, f"p{i}")
        pods[pod.pk] = (pod, key)
    training_round = opening.request_try_start(model_request)
    assert training_round is not None
    return Opened(training_round, outbox, pods)


class SimPod:
    def __init__(self, pod: Pod, key: Ed25519PrivateKey, x: np.ndarray, y: np.ndarray) -> None:
        self.pod = pod
        columns = {name: x[:, i] for i, name in enumerate(breast_features())}
        self.worker = RecordingWorker(
            identity=key,
            transport=InProcessTransport(pod),
            data=MemoryData("health.breast_screening", {**columns, "diagnosis": y}),
            pinned_keys=receipts.public_jwks(),
        )
        self.gone = False
        self.frame_codes: list[str | None] = []

    @property
    def plain(self) -> dict[str, Any]:
        return self.worker.plain

    def frame(self, frame: bytes) -> None:
        """What the pod's channel does with a masked-input frame: the service stores it."""
        round_id, sha256, body = read_masked_frame(frame)
        masked = uploads.MaskedFrame(self.pod.pk, round_id, sha256, body)
        self.frame_codes.append(uploads.masked_frames_store([masked])[0])

    def drop_at(self, stage: str) -> None:
        self.worker.vanish = lambda arrived: arrived == stage

    def handle(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            reply = self.worker.handle(message)
        except Vanish:
            self.gone = True  # the pod vanished from the network
            return
        if reply is None:
            return
        if isinstance(reply, bytes):  # a masked input as a frame on the channel
            self.frame(reply)
        elif reply["type"] == "round.decline":
            answers.round_decline(pod_id=self.pod.pk, round_id=reply["round"], code=reply["code"])
        else:
            answers.round_reply(
                pod_id=self.pod.pk,
                round_id=reply["round"],
                stage=reply["stage"],
                payload=reply["payload"],
            )


def test_rounds_with_dropouts_and_withdrawal(monkeypatch: pytest.MonkeyPatch) -> None:
    x_all, y_all = breast_data()
    model_request = open_request(rounds=2, cohort_size=8, min_participants=4)
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox)

    pods: dict[Any, SimPod] = {}
    for i in range(8):
        pod, key = consenting_online_pod(model_request, f"p{i}")
        pods[pod.pk] = SimPod(pod, key, x_all[i * 60 : (i + 1) * 60], y_all[i * 60 : (i + 1) * 60])

    first = opening.request_try_start(model_request)
    assert first is not None and first.cohort_size == 8
    by_index = {p.index: pods[p.pod_id] for p in first.participants.all()}
    by_index[2].drop_at("masked_input")
    by_index[5].drop_at("unmask")

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
        rounds_clock.rounds_tick(later())
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
    # Published coarsely (84 records in the sum): no exact count to difference between rounds.
    assert first.metrics["eval_examples"] == 80
    assert "weight_total" not in first.metrics

    # One person withdraws: their pod is in no later cohort.
    leaver = by_index[1].pod
    consent = leaver.consents.get(model_request=model_request)
    withdrawn_at = timezone.now()
    consent_withdraw(user=leaver.owner, consent=consent)
    pump()
    rounds_clock.rounds_tick(later())
    pump()
    for _ in range(6):
        rounds_clock.rounds_tick(later())
        pump()
    model_request.refresh_from_db()
    assert model_request.status == ModelRequest.Status.COMPLETED
    second = TrainingRound.objects.get(model_request=model_request, number=2, status="completed")
    assert not RoundParticipant.objects.filter(round=second, pod=leaver).exists()
    # Drawn before the withdrawal, the running round dropped the pod at once; none drawn after
    # it includes the pod.
    for participation in RoundParticipant.objects.filter(pod=leaver, round__number=2):
        assert participation.round.started_at < withdrawn_at
        assert participation.drop_reason in ("consent_withdrawn", "declined:no_consent")
    assert not RoundParticipant.objects.filter(
        pod=leaver, round__started_at__gt=withdrawn_at
    ).exists()
    final = load_safetensors(
        model_request.versions.order_by("-round_number").first().weights.open("rb").read()
    )  # type: ignore[union-attr]
    initial = load_safetensors(model_request.weights.open("rb").read())
    held_out = (x_all[480:], y_all[480:])  # no pod holds these rows
    assert evaluate(spec, final, *held_out).loss_sum < evaluate(spec, initial, *held_out).loss_sum
    assert torch.is_tensor(final["0.weight"])


def test_cancelling_mid_round_stops_it_and_stays_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.services import model_request_cancel

    opened = open_round(monkeypatch, 4, min_participants=3)
    training_round, outbox = opened.round, opened.outbox
    model_request = training_round.model_request
    model_request_cancel(model_request=model_request)
    rounds_clock.rounds_tick(timezone.now() + timezone.timedelta(hours=1))
    training_round.refresh_from_db()
    model_request.refresh_from_db()
    assert training_round.status == TrainingRound.Status.ABORTED
    assert model_request.status == ModelRequest.Status.CANCELLED
    assert TrainingRound.objects.filter(model_request=model_request).count() == 1  # no retry
    assert {m["type"] for _, m in outbox} == {"round.stage", "round.end"}


def test_answers_wait_in_their_rows_until_the_stage_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One answer is one row update; the close takes all answers in, re-checks consent for each
    and drops, with the protocol's reason, a pod whose answer the protocol refuses."""
    from training.secagg.client import ClientRound
    from training.secagg.wire import b64

    opened = open_round(monkeypatch, 6, min_participants=3)
    training_round, outbox = opened.round, opened.outbox
    keys = {pod_id: key for pod_id, (_, key) in opened.pods.items()}
    adverts = {
        pod_id: ClientRound(keys[pod_id]).advertise_keys(message["payload"])
        for pod_id, message in outbox
    }
    asked = {pod_id: message for pod_id, message in outbox}
    outbox.clear()
    order = [p.pod_id for p in training_round.participants.order_by("index")]
    state_at_open = TrainingRound.objects.get(pk=training_round.pk).secagg_state

    def answer(pod_id: Any, payload: Any) -> bool:
        return answers.round_reply(
            pod_id=pod_id, round_id=training_round.pk, stage="advertise_keys", payload=payload
        )

    assert answer(order[0], adverts[order[0]])
    first = RoundParticipant.objects.get(round=training_round, pod_id=order[0])
    assert first.reply == adverts[order[0]]
    assert first.stage_reached == RoundParticipant.Stage.ADVERTISED
    assert TrainingRound.objects.get(pk=training_round.pk).secagg_state == state_at_open
    assert messages.stage_messages_for(order[0]) == []  # it has answered
    assert messages.stage_messages_for(order[1]) == [asked[order[1]]]  # asked again
    assert answer(order[0], adverts[order[0]])  # the same answer again changes nothing
    assert not RoundParticipant.objects.get(round=training_round, pod_id=order[0]).dropped
    other = ClientRound(keys[order[0]]).advertise_keys(asked[order[0]]["payload"])
    assert answer(order[0], other)  # a different second answer to the same stage
    forged = {**adverts[order[1]], "signature": b64(bytes(64))}
    assert answer(order[1], forged)  # recorded now, refused at the close
    assert answer(order[2], adverts[order[2]])
    Consent.objects.filter(
        user_id=RoundParticipant.objects.get(round=training_round, pod_id=order[2]).user_id
    ).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    stranger = PodFactory()
    assert not answer(stranger.pk, adverts[order[3]])  # not in this round
    for pod_id in order[3:]:
        assert answer(pod_id, adverts[pod_id])  # the last answer closes the stage

    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.SHARING
    reasons = {p.index: p.drop_reason for p in training_round.participants.all() if p.dropped}
    assert reasons == {1: "out_of_order", 2: "crypto_failure", 3: "consent_withdrawn_or_paused"}
    assert not training_round.participants.filter(reply__isnull=False).exists()
    assert sorted(int(k) for k in training_round.secagg_state["adverts"]) == [4, 5, 6]
    assert sorted(str(pod_id) for pod_id, m in outbox if m["stage"] == "share_keys") == sorted(
        str(pod_id) for pod_id in order[3:]
    )


def test_a_pod_fetches_its_receipt_once_per_request_and_again_when_it_stops_fitting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime, timedelta

    x, y = breast_data()
    opened = open_round(monkeypatch, 3)
    pod_id, message = opened.outbox[0]
    task = {k: v for k, v in message.items() if k != "receipt"}  # as a resend: no receipt
    pod, key = opened.pods[pod_id]
    sim = SimPod(pod, key, x[:40], y[:40])
    transport = sim.worker.transport
    assert isinstance(transport, InProcessTransport)

    def advertises() -> bool:
        sim.worker.rounds.clear()
        reply = sim.worker.handle(task)
        return reply is not None and reply["type"] == "round.reply"

    assert advertises() and transport.receipts_fetched == 1
    assert advertises() and transport.receipts_fetched == 1  # the held receipt still fits
    # Later, the held receipt has expired but the owner's consent was renewed: fetched anew.
    later = datetime.now(UTC) + timedelta(days=400)
    sim.worker.now = lambda: later
    Consent.objects.filter(user=pod.owner).update(expires_at=later + timedelta(days=30))
    assert advertises() and transport.receipts_fetched == 2
    # Not renewed: the fresh receipt does not fit either, and the pod declines.
    sim.worker.now = lambda: later + timedelta(days=60)
    sim.worker.rounds.clear()
    reply = sim.worker.handle(task)
    assert reply is not None and reply["type"] == "round.decline"
    assert transport.receipts_fetched == 3


def test_the_receipt_rides_the_first_message_of_a_pod_new_to_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 1 sends each pod its owner's signed receipt with the task (the one the receipt
    API gives, but for its issue time); the pod checks it as a fetched one and fetches none.
    A receipt that does not verify, or does not fit the task, is fetched instead."""
    x, y = breast_data()
    opened = open_round(monkeypatch, 3)
    messages = [m for _, m in opened.outbox if m["stage"] == "advertise_keys"]
    assert len(messages) == 3 and all("receipt" in m for m in messages)
    for pod_id, message in opened.outbox:
        pod = opened.pods[pod_id][0]
        consent = Consent.objects.get(user=pod.owner, model_request_id=message["task"]["request"])
        content = verify_receipt(message["receipt"], receipts.public_jwks())
        fetched = verify_receipt(receipts.receipt_signed(consent), receipts.public_jwks())
        assert {**content, "issued_at": None} == {**fetched, "issued_at": None}

    pod_id, message = opened.outbox[0]
    pod, key = opened.pods[pod_id]

    def advertise(message: dict[str, Any]) -> tuple[str, int]:
        sim = SimPod(pod, key, x[:40], y[:40])
        transport = sim.worker.transport
        assert isinstance(transport, InProcessTransport)
        reply = sim.worker.handle(message)
        assert reply is not None
        return str(reply["type"]), transport.receipts_fetched

    assert advertise(message) == ("round.reply", 0)
    forger = Ed25519PrivateKey.generate()
    forged = {
        **message["receipt"],
        "signature": {
            **message["receipt"]["signature"],
            "value": base64.urlsafe_b64encode(
                forger.sign(canonical_json(message["receipt"]["receipt"]))
            ).decode(),
        },
    }
    assert advertise({**message, "receipt": forged}) == ("round.reply", 1)
    other = {**message["receipt"]["receipt"], "purpose": {"model_request": {"id": "another"}}}
    assert advertise({**message, "receipt": receipts.sign(other)}) == ("round.reply", 1)
    assert advertise({**message, "receipt": "not a receipt"}) == ("round.reply", 1)


def test_a_later_round_sends_receipts_only_to_pods_new_to_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training.rounds.messages import first_receipts

    opened = open_round(monkeypatch, 3)
    training_round = opened.round
    participants = list(training_round.participants.order_by("index"))
    later = TrainingRound.objects.create(
        model_request=training_round.model_request,
        number=2,
        attempt=1,
        status=training_round.status,
        cohort_size=3,
        vector_length=training_round.vector_length,
        base_version=training_round.base_version,
        metrics={"seed": 1},
    )
    newcomer_pod, _ = consenting_online_pod(training_round.model_request, "newcomer")
    again = [
        RoundParticipant(round=later, pod=p.pod, user_id=p.user_id, index=p.index)
        for p in participants[:2]
    ]
    again.append(
        RoundParticipant(round=later, pod=newcomer_pod, user_id=newcomer_pod.owner_id, index=3)
    )
    RoundParticipant.objects.bulk_create(again)
    sent = first_receipts(later, again)
    assert list(sent) == [3]
    content = verify_receipt(sent[3], receipts.public_jwks())
    assert content["purpose"]["model_request"]["id"] == str(training_round.model_request_id)


def test_stages_asked_twice_get_the_same_answers_and_the_round_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stage message arrives twice (as after a reconnection): a pod answers the repeat
    with its first answer, uploads its masked input once, and nobody is dropped."""
    opened = open_round(monkeypatch, 4, deliveries=2)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
    assert not training_round.participants.exclude(dropped_at_stage="").exists()
    for sim in pods.values():
        transport = sim.worker.transport
        assert isinstance(transport, InProcessTransport) and transport.uploads == 1


def test_the_clock_closes_an_answered_stage_whose_close_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process that took the last answer died before closing the stage: the next tick
    closes it at once, not at the deadline, and drops nobody."""
    from training.secagg.client import ClientRound

    opened = open_round(monkeypatch, 3)
    training_round, outbox = opened.round, opened.outbox
    keys = {pod_id: key for pod_id, (_, key) in opened.pods.items()}
    closes = closing.round_advance
    monkeypatch.setattr(closing, "round_advance", lambda *args, **kwargs: None)  # lost
    for pod_id, message in list(outbox):
        reply = ClientRound(keys[pod_id]).advertise_keys(message["payload"])
        answers.round_reply(
            pod_id=pod_id, round_id=training_round.pk, stage="advertise_keys", payload=reply
        )
    monkeypatch.setattr(closing, "round_advance", closes)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.ADVERTISING
    assert training_round.stage_deadline is not None
    rounds_clock.rounds_tick(training_round.stage_deadline - timezone.timedelta(seconds=30))
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.SHARING
    assert not training_round.participants.exclude(dropped_at_stage="").exists()
    # A second closer of that stage (it saw "all answered" before the first closed it) must
    # not close the next stage, which nobody has answered yet, in its place.
    closing.round_advance(training_round.pk, TrainingRound.Status.ADVERTISING)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.SHARING
    assert not training_round.participants.exclude(dropped_at_stage="").exists()


def test_a_pod_dropped_while_unmasking_stays_in_the_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Collection fixed the inputs in the sum; a pod dropped afterwards (here for a different
    second unmasking answer) is still in it, and its masks are removed like everyone's."""
    opened = open_round(monkeypatch, 4)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    deviant = None
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
        # The first pod to answer the unmasking stage (so not the one whose answer closes it)
        # answers again, differently.
        if deviant is None and message.get("stage") == "unmask":
            deviant = pod_id
            answers.round_reply(
                pod_id=pod_id,
                round_id=training_round.pk,
                stage="unmask",
                payload={"b_shares": {}, "s_shares": {}},
            )
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    dropped = training_round.participants.get(pod_id=deviant)
    assert (dropped.dropped_at_stage, dropped.drop_reason) == ("unmask", "out_of_order")
    assert training_round.survivors == 4
    spec = validate_spec(training_round.model_request.spec)
    from training.modelspec.vectors import flatten_state

    base = load_safetensors(training_round.base_version.weights.open("rb").read())  # type: ignore[union-attr]
    new = load_safetensors(
        ModelVersion.objects.get(model_request=training_round.model_request, round_number=1)
        .weights.open("rb")
        .read()
    )
    contributions = [sim.plain for sim in pods.values()]
    expected = sum(c["update"] for c in contributions) / sum(
        float(c["weight"][0]) for c in contributions
    )
    delta = flatten_state(new, spec) - flatten_state(base, spec)
    assert np.allclose(delta, expected, atol=1e-4)


def algorithm_request(
    monkeypatch: pytest.MonkeyPatch, algorithm: str, *, rounds: int
) -> tuple[ModelRequest, list[tuple[Any, dict[str, Any]]], dict[Any, SimPod]]:
    """A request training with ``training.algorithm`` = ``algorithm`` (2 local epochs), four
    consenting online pods with 60 breast-screening records each, and the engine's outbox."""
    from dataspace.demo import demo_request_spec, demo_weights
    from tests.factories import ProviderFactory, breast_category
    from training.services import model_request_create

    breast_category()
    spec = demo_request_spec(rounds=rounds, cohort_size=4, min_participants=4, local_epochs=2)
    spec["training"]["algorithm"] = {"type": algorithm}
    model_request = model_request_create(
        provider=ProviderFactory(), spec=spec, weights=demo_weights(spec)
    )
    outbox: list[tuple[Any, dict[str, Any]]] = []
    capture_pod_messages(monkeypatch, outbox)
    x, y = breast_data()
    sims = {}
    for i in range(4):
        pod, key = consenting_online_pod(model_request, f"{algorithm}{i}")
        sims[pod.pk] = SimPod(pod, key, x[i * 60 : (i + 1) * 60], y[i * 60 : (i + 1) * 60])
    return model_request, outbox, sims


def test_a_slow_pod_is_counted_with_fewer_steps_under_fednova(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FedNova (Wang et al. 2020) through the engine and real SecAgg+: one pod manages a quarter
    of the plan's local steps; it is not dropped, its step count rides in the masked sum, and
    the model moves by FedNova's average of the four contributions."""
    from training.modelspec.federated import average_update

    model_request, outbox, sims = algorithm_request(monkeypatch, "fednova", rounds=1)
    slow = next(iter(sims))
    sims[slow].worker.speed = 0.25
    training_round = opening.request_try_start(model_request)
    assert training_round is not None
    while outbox:
        pod_id, message = outbox.pop(0)
        sims[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
    steps = {pod_id: float(sim.plain["local_steps"][0]) for pod_id, sim in sims.items()}
    fast = [s for pod_id, s in steps.items() if pod_id != slow]
    assert 0 < steps[slow] < min(fast)  # counted, with fewer steps
    parsed = validate_spec(model_request.spec)
    totals = {
        part: sum(np.asarray(sim.plain[part], dtype=np.float64) for sim in sims.values())
        for part in ("update", "weight", "local_steps")
    }
    expected = average_update(parsed, totals)
    from training.modelspec.vectors import flatten_state

    base = load_safetensors(training_round.base_version.weights.open("rb").read())  # type: ignore[union-attr]
    new = load_safetensors(
        ModelVersion.objects.get(model_request=model_request, round_number=1)
        .weights.open("rb")
        .read()
    )
    delta = flatten_state(new, parsed) - flatten_state(base, parsed)
    assert np.allclose(delta, expected, atol=1e-4)
