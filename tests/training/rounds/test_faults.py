"""Rounds that survive faults (issue 12): stage messages lost with the process that sent them,
files left behind by a killed process. The engine in one process, real SecAgg+ and training."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from tests.training.rounds.test_engine import (  # the autouse fixture runs tasks inline
    _tasks_in_process,  # noqa: F401
    open_round,
)
from training.models import TrainingRound
from training.rounds import clock as rounds_clock

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_clock_asks_again_pods_whose_stage_message_was_lost(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The process that closed advertise_keys died right after its commit: no pod got the
    share_keys message. Within the resend interval (not the deadline) the clock sends it
    again, once per interval, only to pods that have not answered; the round completes with
    nobody dropped."""
    settings.ROUND_RESEND_SECONDS = 5
    opened = open_round(monkeypatch, 4)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    lost: list[Any] = []
    while outbox:
        pod_id, message = outbox.pop(0)
        if message.get("stage") == "share_keys":
            lost.append(pod_id)  # sent after commit by a process that then died
            continue
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.SHARING and len(lost) == 4
    closed = timezone.now()
    assert training_round.stage_deadline is not None

    # Before the resend interval nobody is asked again.
    rounds_clock.rounds_tick(closed + timezone.timedelta(seconds=2))
    assert outbox == []
    # After it, every pod still waiting is asked again: well before the deadline.
    resent_at = closed + timezone.timedelta(seconds=6)
    assert resent_at < training_round.stage_deadline
    rounds_clock.rounds_tick(resent_at)
    assert sorted(str(p) for p, m in outbox if m["stage"] == "share_keys") == sorted(
        str(p) for p in lost
    )
    assert len(outbox) == 4
    # Idempotent: another tick within the interval asks nobody again.
    rounds_clock.rounds_tick(resent_at + timezone.timedelta(seconds=1))
    assert len(outbox) == 4

    # One pod answers; the next resend goes only to the three still waiting.
    first_pod, first_message = outbox.pop(0)
    pods[first_pod].handle(first_message)
    outbox.clear()
    rounds_clock.rounds_tick(resent_at + timezone.timedelta(seconds=6))
    assert len(outbox) == 3 and first_pod not in {p for p, _ in outbox}
    # The pod that answered gets the stage a second time (a resend crossing its answer): it
    # answers with its first answer, and is not dropped.
    outbox.append((first_pod, first_message))
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
    assert not training_round.participants.exclude(dropped_at_stage="").exists()


def test_the_sweeper_removes_files_a_killed_process_left_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shard sums of a round that ended (its root's after-commit deletion never ran), the
    inputs left in an ended round's directory (its ending's after-commit deletion never ran, or
    an upload killed before its commit), a masked input still attached to a finished round, and
    an upload stored flat (an earlier version) but never committed are removed; the files of a
    running round and an upload still in flight are kept."""
    import os

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from training.rounds import sweeping
    from training.rounds.files import input_name

    ended = open_round(monkeypatch, 3).round
    running = open_round(monkeypatch, 3).round

    def store(name: str) -> str:
        return default_storage.save(name, ContentFile(b"\x00" * 16))

    ended_shards = [store(f"aggregates/round-{ended.pk}/shard-{i}.u32") for i in range(2)]
    running_shard = store(f"aggregates/round-{running.pk}/shard-0.u32")
    gone_round_shard = store("aggregates/round-999999/shard-0.u32")
    for training_round in (ended, running):
        participant = training_round.participants.order_by("index").first()
        assert participant is not None
        participant.masked_input.save(
            f"round-{training_round.pk}-pod-1.u32", ContentFile(b"\x01" * 16)
        )
    ended_input = ended.participants.get(index=1).masked_input.name
    running_input = running.participants.get(index=1).masked_input.name
    orphan = store(f"masked/round-{running.pk}-pod-2.u32")  # stored, never committed
    in_flight = store(f"masked/round-{running.pk}-pod-3.u32")  # being stored right now
    ended_left = [store(input_name(ended.pk, i)) for i in (2, 3)]
    running_left = store(input_name(running.pk, 2))  # its retry overwrites it, or the end
    long_ago = timezone.now() - timezone.timedelta(hours=1)
    for name in (orphan, ended_input, running_input, *ended_left, running_left):
        os.utime(default_storage.path(name), (long_ago.timestamp(), long_ago.timestamp()))
    TrainingRound.objects.filter(pk=ended.pk).update(status=TrainingRound.Status.COMPLETED)

    removed = sweeping.sweep_files(timezone.now())

    assert removed == {"shards": 3, "masked_inputs": 4}
    for name in (*ended_shards, gone_round_shard, orphan, ended_input, *ended_left):
        assert not default_storage.exists(name), name
    for name in (running_shard, running_input, in_flight, running_left):
        assert default_storage.exists(name), name
    for base in ("aggregates", "masked"):
        assert not os.path.isdir(default_storage.path(f"{base}/round-{ended.pk}"))
    assert not ended.participants.exclude(masked_input="").exists()
    assert sweeping.sweep_files(timezone.now()) == {"shards": 0, "masked_inputs": 0}


def test_the_sweep_runs_once_per_interval_across_clocks() -> None:
    from django.core.cache import cache

    from training.rounds import sweeping

    cache.delete("rounds:sweep")
    assert sweeping.sweep_due()
    assert not sweeping.sweep_due()  # another clock (or the next tick) within the interval


class FlakyUploads:
    """A pod's transport whose first ``failures`` uploads fail as a restarting web process
    does (connection refused); with ``lose_answer`` the first upload is stored but its answer
    is lost on the way back."""

    def __init__(self, inner: Any, failures: int, *, lose_answer: bool = False) -> None:
        self.inner = inner
        self.failures = failures
        self.lose_answer = lose_answer
        self.bodies: list[bytes] = []

    def receipt(self, request_id: str) -> dict[str, Any]:
        return dict(self.inner.receipt(request_id))

    def download(self, path: str) -> bytes:
        return bytes(self.inner.download(path))

    def upload(self, path: str, body: bytes) -> None:
        import httpx

        self.bodies.append(body)
        if self.lose_answer and len(self.bodies) == 1:
            self.inner.upload(path, body)
            raise httpx.ReadError("connection reset while reading the answer")
        if len(self.bodies) <= self.failures:
            raise httpx.ConnectError("connection refused")
        self.inner.upload(path, body)


def test_pods_retry_a_failed_upload_with_the_same_bytes_and_stay_in_the_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12, defect 7: one failed upload used to cost a pod its round. Now it retries with
    back-off (the same bytes), and an upload whose answer was lost counts as done."""
    opened = open_round(monkeypatch, 4)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    flaky: list[FlakyUploads] = []
    sleeps: list[float] = []
    # By index, so the pod whose answer is lost uploads last: its upload closes collection,
    # and its retry still learns the input is stored.
    by_index = [p.pod_id for p in training_round.participants.order_by("-index")]
    for n, pod_id in enumerate(by_index):
        sim = pods[pod_id]
        transport = FlakyUploads(sim.worker.transport, failures=n, lose_answer=n == 0)
        sim.worker.transport = transport
        sim.worker.sleep = sleeps.append
        flaky.append(transport)
    while outbox:
        pod_id, message = outbox.pop(0)
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert training_round.survivors == 4
    assert not training_round.participants.exclude(dropped_at_stage="").exists()
    assert [len(t.bodies) for t in flaky] == [2, 2, 3, 4]
    for transport in flaky:
        assert len(set(transport.bodies)) == 1  # the same bytes every time
    assert len(sleeps) == 1 + 1 + 2 + 3 and max(sleeps) <= 8.0


def test_a_pod_gives_up_on_a_refusal_at_once_and_on_failures_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime, timedelta

    from pods.agent.retry import RETRY_ATTEMPTS, TransportFailed
    from pods.agent.rounds import RoundWorker
    from pods.agent.service import ServiceError

    worker = RoundWorker(identity=None, transport=None, data=None, pinned_keys={})  # type: ignore[arg-type]
    waited: list[float] = []
    worker.sleep = waited.append
    calls = 0

    def refused() -> None:
        nonlocal calls
        calls += 1
        raise ServiceError("wrong_stage", "The round is not collecting masked inputs.")

    with pytest.raises(TransportFailed, match="wrong_stage"):
        worker._call(refused)
    assert calls == 1 and waited == []  # the service decided: no retry

    def down() -> None:
        nonlocal calls
        calls += 1
        raise ServiceError("http_error", "HTTP 502")

    calls = 0
    with pytest.raises(TransportFailed, match="http_error"):
        worker._call(down)
    assert calls == RETRY_ATTEMPTS  # bounded

    clock = datetime(2026, 1, 1, tzinfo=UTC)
    worker.now = lambda: clock
    worker.deadline = clock + timedelta(seconds=3)

    def advance(seconds: float) -> None:
        nonlocal clock
        clock += timedelta(seconds=seconds)

    worker.sleep = advance
    calls = 0
    with pytest.raises(TransportFailed):
        worker._call(down)
    assert clock < worker.deadline  # never slept past the stage deadline
    assert 2 <= calls < RETRY_ATTEMPTS


def test_a_restarted_pod_asked_a_later_stage_declines_and_the_stage_closes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pod process restarted mid-round lost its round keys; asked share_keys again (on
    reconnecting, or by the clock) it declines at once instead of staying silent, so the stage
    closes as soon as the others answered, not at the deadline. A late decline after the
    stages are over changes nothing."""
    from training.rounds import answers

    opened = open_round(monkeypatch, 5, min_participants=4)
    training_round, outbox = opened.round, opened.outbox
    pods = opened.sims()
    restarted = next(iter(pods))
    while outbox:
        pod_id, message = outbox.pop(0)
        if pod_id == restarted and message.get("stage") == "share_keys":
            pods[pod_id].worker.rounds.clear()  # the process restarted: its round state is gone
        pods[pod_id].handle(message)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED  # no deadline was needed
    assert training_round.survivors == 4
    gone = training_round.participants.get(pod_id=restarted)
    assert (gone.dropped_at_stage, gone.drop_reason) == ("share_keys", "declined:round_state_lost")

    other = training_round.participants.exclude(pod_id=restarted).first()
    assert other is not None
    assert answers.round_decline(pod_id=other.pod_id, round_id=training_round.pk, code="late")
    other.refresh_from_db()
    assert not other.dropped  # the finished round's history is left as it ended


def _to_aggregation_with_lost_shards(monkeypatch: pytest.MonkeyPatch, size: int) -> TrainingRound:
    """A round run up to aggregation whose shard tasks were lost (the worker that took them
    was killed): collection and unmasking closed, no shard done."""
    from training.rounds import aggregation

    opened = open_round(monkeypatch, size)
    pods = opened.sims()
    with monkeypatch.context() as lost:
        lost.setattr(aggregation, "dispatch_shards", lambda *args, **kwargs: None)
        while opened.outbox:
            pod_id, message = opened.outbox.pop(0)
            pods[pod_id].handle(message)
    training_round = opened.round
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.AGGREGATING
    assert training_round.metrics["shards_done"] == []
    return training_round


def test_the_clock_asks_again_for_shards_no_worker_reported_within_the_resend_interval(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The worker holding a round's shard tasks was killed: the clock enqueues the missing
    shards again once ``ROUND_RESEND_SECONDS`` pass without a report — well before the stage
    deadline (it used to wait for it, or for the broker's visibility timeout) — and the
    round completes with one model version."""
    from training.models import ModelVersion

    settings.ROUND_RESEND_SECONDS = 5
    training_round = _to_aggregation_with_lost_shards(monkeypatch, 3)
    entered = timezone.now()
    assert training_round.stage_deadline is not None

    rounds_clock.rounds_tick(entered + timezone.timedelta(seconds=2))
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.AGGREGATING  # not yet due

    asked = entered + timezone.timedelta(seconds=6)
    assert asked < training_round.stage_deadline
    rounds_clock.rounds_tick(asked)
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    assert (
        ModelVersion.objects.filter(
            model_request=training_round.model_request, round_number=1
        ).count()
        == 1
    )


def test_a_shard_task_finishing_after_its_duplicate_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Two tasks for one shard (the clock asked again while the first was slow): the first to
    finish writes the sum and the root runs; the late one writes nothing — before, it saved its
    sum after the root had deleted the shards, a file left behind."""
    from django.core.files.storage import default_storage

    from training.rounds import aggregation

    settings.ROUND_AGGREGATION_SHARDS = 1
    training_round = _to_aggregation_with_lost_shards(monkeypatch, 3)
    sums = aggregation.sum_range
    calls = 0

    def slow_sum(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the slow task: its duplicate runs, and finishes the round, meanwhile
            aggregation.shard_sum(training_round.pk, 0)
        return sums(*args)

    monkeypatch.setattr(aggregation, "sum_range", slow_sum)
    aggregation.shard_sum(training_round.pk, 0)
    assert calls == 2
    training_round.refresh_from_db()
    assert training_round.status == TrainingRound.Status.COMPLETED
    folder = f"aggregates/round-{training_round.pk}"
    assert not default_storage.exists(folder) or default_storage.listdir(folder)[1] == []


def test_a_pod_retries_through_a_web_restart_as_long_as_the_stage_lasts() -> None:
    """A web process restarted by its supervisor on a loaded host answered again only ~25 s
    later (tests/chaos): the pod's upload must keep being retried until then — within the
    stage's deadline — not give up after a fixed count of attempts (8: as little as 16 s)."""
    import random
    from datetime import UTC, datetime, timedelta

    import httpx

    from pods.agent.retry import RETRY_MAX_DELAY
    from pods.agent.rounds import RoundWorker

    worker = RoundWorker(identity=None, transport=None, data=None, pinned_keys={})  # type: ignore[arg-type]
    start = clock = datetime(2026, 1, 1, tzinfo=UTC)
    worker.now = lambda: clock
    worker.deadline = start + timedelta(seconds=60)

    class Shortest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a  # the shortest waits the jitter allows: the fewest seconds per attempt

    worker.rng = Shortest()
    waits: list[float] = []

    def advance(seconds: float) -> None:
        nonlocal clock
        waits.append(seconds)
        clock += timedelta(seconds=seconds)

    worker.sleep = advance

    def restarting() -> str:
        if clock < start + timedelta(seconds=30):
            raise httpx.ConnectError("connection refused")
        return "stored"

    assert worker._call(restarting) == "stored"
    assert clock < worker.deadline
    assert max(waits) <= RETRY_MAX_DELAY  # back within the cap once the process answers


def test_a_web_process_starts_without_loading_torch() -> None:
    """A web process restarted by its supervisor keeps pods waiting until it answers; it used
    to import torch through the aggregation module (the model update), ~4 s of CPU of its ~5 s
    start. Only workers load it (before forking their pool: dataspace.celery)."""
    import os
    import subprocess
    import sys

    from tests.live import ROOT

    code = (
        "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'dataspace.settings'); "
        "import dataspace.asgi; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=os.environ,
    )
    assert out.stdout.split()[-1] == "False"
