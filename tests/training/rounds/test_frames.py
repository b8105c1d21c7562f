"""Masked inputs as binary frames on the pod's channel: the same round, the same checks and
error codes as an HTTP upload, many pods' inputs stored in one transaction."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.utils import timezone

from consent.models import Consent
from pods.agent.protocol import read_masked_frame
from tests.factories import PodFactory
from tests.training.rounds.test_engine import (  # noqa: F401  (the fixture runs tasks inline)
    InProcessTransport,
    SimPod,
    _tasks_in_process,
    open_round,
)
from training.models import ModelVersion, RoundParticipant, TrainingRound
from training.rounds import uploads
from training.rounds.uploads import MaskedFrame

pytestmark = pytest.mark.django_db(transaction=True)

FRAMES = 8 * 1024 * 1024  # what a service offers in its welcome


def test_a_round_completes_with_masked_inputs_sent_as_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every stage arrives twice (as after a reconnection): the pod sends the same frame again
    and the service takes it as the input it holds; nothing goes over HTTP."""
    opened = open_round(monkeypatch, 4, deliveries=2)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    for sim in pods.values():
        sim.worker.use_channel({"type": "welcome", "masked_frames": FRAMES})
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
    assert ModelVersion.objects.filter(model_request=training_round.model_request).count() == 2
    for sim in pods.values():
        assert sim.frame_codes == [None, None]  # stored, then taken as the same input again
        transport = sim.worker.transport
        assert isinstance(transport, InProcessTransport) and transport.uploads == 0


class HoldingPod(SimPod):
    """A pod whose masked-input frame the test holds instead of sending."""

    held: bytes | None = None

    def frame(self, frame: bytes) -> None:
        self.held = frame


def test_frames_are_checked_like_uploads_and_stored_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = open_round(monkeypatch, 5, min_participants=3)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims(HoldingPod)
    for sim in pods.values():
        sim.worker.use_channel({"type": "welcome", "masked_frames": FRAMES})
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COLLECTING
    order = [p.pod_id for p in training_round.participants.order_by("index")]
    frames: dict[Any, tuple[int, str, bytes]] = {}
    for pod_id in order:
        held = pods[pod_id].held
        assert held is not None
        frames[pod_id] = read_masked_frame(held)
    a, b, c, d, e = order
    round_id = training_round.pk

    def frame(pod_id: Any, body: bytes | None = None, sha256: str | None = None) -> MaskedFrame:
        _, declared, sent = frames[pod_id]
        body = sent if body is None else body
        return MaskedFrame(pod_id, round_id, sha256 or declared, body)

    other = bytes(len(frames[c][2]))
    Consent.objects.filter(
        user_id=RoundParticipant.objects.get(round=training_round, pod_id=e).user_id
    ).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    codes = uploads.masked_frames_store(
        [
            MaskedFrame(PodFactory().pk, round_id, frames[a][1], frames[a][2]),  # not in it
            frame(a, frames[a][2][:-4]),  # short
            frame(b, sha256=hashlib.sha256(b"x").hexdigest()),  # the hash does not match
            frame(c),
            frame(c),  # the same input again (a resend)
            frame(c, other, hashlib.sha256(other).hexdigest()),  # a different second input
            frame(e),  # its owner's consent has expired
            MaskedFrame(d, round_id + 1000, frames[d][1], frames[d][2]),  # no such round
        ]
    )
    assert codes == [
        "not_in_round",
        "wrong_length",
        "checksum_mismatch",
        None,
        None,
        "already_uploaded",
        "consent_withdrawn",
        "not_in_round",
    ]
    rows = {p.pod_id: p for p in training_round.participants.all()}
    assert rows[c].stage_reached == RoundParticipant.Stage.MASKED
    with rows[c].masked_input.open("rb") as stored:
        assert stored.read() == frames[c][2]
    assert rows[c].masked_sha256 == frames[c][1]
    assert not any(rows[p].masked_input for p in (a, b, d, e))
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COLLECTING  # a, b, d, e to come

    # The rest in one batch: stored, and collection closes without waiting for the deadline
    # for e (whose consent ended: it is dropped at the close).
    assert uploads.masked_frames_store([frame(a), frame(b), frame(d)]) == [None, None, None]
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COLLECTING
    from training.rounds import clock

    clock.rounds_tick(training_round.stage_deadline + timezone.timedelta(seconds=1))
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.CHECKING
    dropped = {p.pod_id: p.dropped_at_stage for p in training_round.participants.all()}
    assert dropped == {a: "", b: "", c: "", d: "", e: "masked_input"}
    # Collection has closed: a frame now is refused, a repeat of a stored input is not.
    assert uploads.masked_frames_store([frame(e), frame(a)]) == ["wrong_stage", None]


def test_an_input_written_by_a_process_killed_before_its_commit_is_replaced_or_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process killed between writing pods' inputs and committing their rows (here the
    transaction fails right there) leaves files no row refers to. A pod's retry, as a frame or
    over HTTP, writes its one name again: one file, the retried input. An input never retried
    goes with its round's directory when the round ends."""
    import io
    from pathlib import Path

    from django.core.files.storage import default_storage

    from training.rounds import clock, closing
    from training.rounds.files import input_name

    opened = open_round(monkeypatch, 4, min_participants=3)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims(HoldingPod)
    for sim in pods.values():
        sim.worker.use_channel({"type": "welcome", "masked_frames": FRAMES})
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    round_id = training_round.pk
    index = {p.pod_id: p.index for p in training_round.participants.all()}
    a, b, c, d = sorted(index, key=index.__getitem__)
    sent = {}
    for pod_id in index:
        held = pods[pod_id].held
        assert held is not None
        sent[pod_id] = read_masked_frame(held)

    def frame(pod_id: Any) -> MaskedFrame:
        _, declared, body = sent[pod_id]
        return MaskedFrame(pod_id, round_id, declared, body)

    def upload(pod_id: Any) -> None:
        _, declared, body = sent[pod_id]
        uploads.masked_input_store(
            pod=opened.pods[pod_id][0],
            round_id=round_id,
            stream=io.BytesIO(body),
            length=len(body),
            sha256=declared,
        )

    def killed(*_args: Any) -> None:
        raise RuntimeError("killed before the commit")

    with monkeypatch.context() as patched:
        patched.setattr(closing, "close_when_answered", killed)
        with pytest.raises(RuntimeError):
            uploads.masked_frames_store([frame(a), frame(d)])
        with pytest.raises(RuntimeError):
            upload(b)
    folder = Path(default_storage.path(f"masked/round-{round_id}"))

    def files() -> list[str]:
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    assert files() == sorted(f"pod-{index[p]}.u32" for p in (a, b, d))
    assert not training_round.participants.exclude(masked_input="").exists()

    assert uploads.masked_frames_store([frame(a), frame(c)]) == [None, None]
    upload(b)  # d never comes back
    assert files() == sorted(f"pod-{index[p]}.u32" for p in (a, b, c, d))  # no .part left
    for row in training_round.participants.exclude(pod_id=d):
        assert row.masked_input.name == input_name(round_id, row.index)
        with row.masked_input.open("rb") as stored:
            assert stored.read() == sent[row.pod_id][2]

    training_round.refresh_from_db()
    clock.rounds_tick(training_round.stage_deadline + timezone.timedelta(seconds=1))
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 3
    assert files() == []
