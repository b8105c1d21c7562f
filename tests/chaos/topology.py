"""The production topology for the chaos cases, and what every case asserts afterwards.

PostgreSQL, Redis (channel layer, broker, cache), two uvicorn web processes, one Celery worker,
Celery beat as the rounds clock, and replicas of simulated pods (``dataspace-pod simulate``),
each replica's pods pinned to one web process. A case kills one process (``kill -9``) and,
where a supervisor would, starts it again; :func:`check_request` then asserts the outcome:
the request completed, one model version per round, each round's model is the plain FedAvg of
the inputs in its sum (recomputed here from the replicas' data partitions), no masked input or
shard file left, nothing stuck, and the consent log verifies.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from django.core.management import call_command

from consent.services import consent_grant
from dataspace.processes import stop
from pods.models import Pod
from pods.presence import online_pods
from tests.factories import open_request
from tests.live import ROOT, LiveService, on_test_database, wait_for
from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound

# Every case: live processes on PostgreSQL and Redis (the fixture skips without PostgreSQL).
MARKS = [
    pytest.mark.chaos,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (broker, layer)"),
    pytest.mark.timeout(600),
]
# A stage is long (as in production): recovering at its deadline would show in the figures.
STAGE_SECONDS = 60
IN_SUM = ("masked_input", "consistency_check", "unmask")  # stages reached with an input sent


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def kill(process: subprocess.Popen[Any]) -> float:
    """``kill -9`` a process and its children (a prefork pool); when it died (monotonic)."""
    pids = [*children(process.pid), process.pid]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    at = time.monotonic()
    process.wait(10)
    return at


def broker() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"])


class Replica:
    """A ``simulate`` process and the pod homes it runs (provisioned against one web)."""

    def __init__(self, name: str, homes: Path, count: int, web: int) -> None:
        self.name, self.homes, self.count, self.web = name, homes, count, web
        self.process: subprocess.Popen[Any] | None = None


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.media = tmp / "media"
        self.webs: list[LiveService] = []
        self.replicas: list[Replica] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self.beat_process: subprocess.Popen[Any] | None = None
        self.web_env: dict[str, str] = {}

    # -- processes ----------------------------------------------------------------------------

    def _web(self, name: str, port: int | None = None) -> LiveService:
        data = self.tmp / name
        data.mkdir(exist_ok=True)
        return on_test_database(
            data,
            port=port,
            ROUNDS_TICK_IN_PROCESS="0",
            ROUND_STAGE_SECONDS=str(STAGE_SECONDS),
            MEDIA_ROOT=str(self.media),
            **self.web_env,
        ).start()

    def web(self, name: str) -> LiveService:
        self.webs.append(self._web(name))
        return self.webs[-1]

    def restart_web(self, index: int) -> float:
        """``kill -9`` web process ``index`` and start it again on its port, as a supervisor
        would (pods are pinned to its origin); when it was killed."""
        old = self.webs[index]
        assert old.process is not None
        killed_at = kill(old.process)
        self.webs[index] = self._web(f"web{index}", port=old.port)
        return killed_at

    def spawn(self, name: str, *args: str) -> subprocess.Popen[Any]:
        env = {**self.webs[0].env, "ROUNDS_TICK_SECONDS": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=env,
            stdout=(self.tmp / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def worker(self, name: str) -> subprocess.Popen[Any]:
        return self.spawn(
            name,
            *("celery", "-A", "dataspace", "worker", "--concurrency", "1", "-n", f"{name}@%h"),
            *("--loglevel", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"),
        )

    def beat(self) -> subprocess.Popen[Any]:
        self.beat_process = self.spawn(
            "beat", "celery", "-A", "dataspace", "beat", "--schedule", str(self.tmp / "beat-sched")
        )
        return self.beat_process

    def replica(self, web: int, count: int) -> Replica:
        """Provision ``count`` pods of their own people against web ``web``, and run them."""
        name = f"pods-{len(self.replicas)}"
        replica = Replica(name, self.tmp / name, count, web)
        call_command(
            "provision_pods",
            simulated=True,
            count=count,
            homes=replica.homes,
            server=self.webs[web].url,
            prefix=name,  # people of their own: one pod per person
            stdout=io.StringIO(),
        )
        self.replicas.append(replica)
        self.start_replica(replica)
        return replica

    def start_replica(self, replica: Replica) -> None:
        replica.process = self.spawn(
            replica.name,
            *("pods.agent.cli", "--json", "simulate", "--pods", str(replica.count)),
            *("--homes", str(replica.homes), "--dataset", "breast_screening"),
            *("--stats-every", "3600"),
        )

    def federation(
        self, replicas: list[tuple[int, int]], *, rounds: int, min_participants: int
    ) -> ModelRequest:
        """Two web processes, a worker, beat, pod replicas ((web, pods) each), all online; a
        request whose cohort is every pod, consented by every owner. Returns the request."""
        self.web("web0")
        self.web("web1")
        self.worker("worker-a")
        pods = sum(count for _, count in replicas)
        model_request = open_request(
            rounds=rounds, cohort_size=pods, min_participants=min_participants
        )
        for web, count in replicas:
            self.replica(web, count)
        wait_for(lambda: online_pods().count() == pods, 180, "the pods to connect")
        for pod in Pod.objects.all():
            consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        self.beat()  # last: the clock starts the request with every pod consenting
        return model_request

    def first_round(self, model_request: ModelRequest) -> TrainingRound:
        """Round 1, once open; its cohort is every pod."""
        first = round_of(model_request, 1)
        assert first.participants.count() == Pod.objects.count()
        return first

    def clock_state(self, web: int = 0) -> str:
        """The rounds clock as ``/readyz`` on web ``web`` reports it."""
        try:
            body = httpx.get(f"{self.webs[web].url}/readyz", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return "unreachable"
        return str(body["checks"]["rounds_clock"])

    def logs(self) -> str:
        parts = [
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log")
        ]
        parts += [f"== web {w.url}\n{w.log()[-3000:]}" for w in self.webs]
        return "\n".join(parts)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                for pid in (*children(process.pid), process.pid):
                    os.kill(pid, signal.SIGCONT)  # a stopped process cannot stop cleanly
                stop(process, 15)
        for web in self.webs:
            web.stop()


def round_of(model_request: ModelRequest, number: int, timeout: float = 120) -> TrainingRound:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (
            TrainingRound.objects.filter(model_request=model_request, number=number)
            .order_by("-attempt")
            .first()
        ),
        timeout,
        f"round {number} to open",
    )


def wait_status(training_round: TrainingRound, statuses: set[str], timeout: float) -> str:
    """Poll a round (every 20 ms: a case acts right after a transition) until its status is
    one of ``statuses``; the status."""
    return str(
        wait_for(
            lambda: (
                status
                if (status := TrainingRound.objects.get(pk=training_round.pk).status) in statuses
                else None
            ),
            timeout,
            f"round {training_round.number} to reach {sorted(statuses)}",
            every=0.02,
        )
    )


def wait_finished(model_request: ModelRequest, number: int, timeout: float) -> TrainingRound:
    """The first round ``number`` attempt that completed; fails if the request failed."""

    def finished() -> TrainingRound | None:
        if ModelRequest.objects.get(pk=model_request.pk).status == ModelRequest.Status.FAILED:
            raise AssertionError("the request failed")
        return TrainingRound.objects.filter(
            model_request=model_request, number=number, status=TrainingRound.Status.COMPLETED
        ).first()

    return wait_for(finished, timeout, f"round {number} to complete")  # type: ignore[no-any-return]


def report(case: str, seconds: float, detail: str = "") -> None:
    """The figure each case prints (pytest -s; CI logs): fault to recovery."""
    print(f"\nchaos: {case}: recovered {seconds:.1f} s after the fault{detail}")


# -- the outcome every case asserts -----------------------------------------------------------


def _replica_data(stack: Stack) -> dict[Any, Any]:
    """Each pod's records, as its replica partitions the data set (``simulate``'s defaults)."""
    from pods.agent.cli import build_parser
    from pods.agent.home import STATE_FILE, PodHome
    from pods.agent.service import PodService
    from pods.agent.simulate import partitions

    defaults = build_parser().parse_args(
        ["simulate", "--pods", "1", "--homes", ".", "--dataset", "breast_screening"]
    )
    data: dict[Any, Any] = {}
    for replica in stack.replicas:
        homes = sorted(p for p in replica.homes.iterdir() if (p / STATE_FILE).exists())
        states = [PodHome(p).load_state() for p in homes]
        service = PodService(PodHome(homes[0]), states[0])
        try:
            _, parts = partitions(
                service, "breast_screening", len(homes), defaults.partition, defaults.seed
            )
        finally:
            service.close()
        for state, part in zip(states, parts, strict=True):
            data[Pod.objects.get(pk=state.pod_id).pk] = part
    return data


def check_fedavg(stack: Stack, model_request: ModelRequest) -> None:
    """Each round's model = its base + the plain FedAvg of the contributions in its sum."""
    from pods.agent.data import encode_for
    from pods.agent.plan import PlanPrivacy, contribution
    from training.modelspec import load_weights, validate_spec
    from training.modelspec.trainer import train_local
    from training.modelspec.vectors import flatten_state

    spec = validate_spec(model_request.spec)
    plan = PlanPrivacy.of(spec)
    data = _replica_data(stack)
    for done in TrainingRound.objects.filter(
        model_request=model_request, status=TrainingRound.Status.COMPLETED
    ):
        assert done.base_version is not None
        base = load_weights(done.base_version.weights.open("rb").read(), spec)
        in_sum = done.participants.filter(stage_reached__in=IN_SUM)
        assert in_sum.count() == done.survivors
        parts = []
        for participant in in_sum:
            source = data[participant.pod_id]
            category = spec.data.category
            encoded = encode_for(spec, source.records(category), source.fields(category))
            x, y = encoded.x, encoded.y
            result = train_local(spec, base, x, y, seed=int(done.metrics["seed"]))
            parts.append(contribution(result, plan, spec))
        expected = sum(p["update"] for p in parts) / sum(float(p["weight"][0]) for p in parts)
        version = ModelVersion.objects.get(model_request=model_request, round_number=done.number)
        after = load_weights(version.weights.open("rb").read(), spec)
        assert np.allclose(
            flatten_state(after, spec) - flatten_state(base, spec), expected, atol=1e-4
        ), f"round {done.number}: the model is not the FedAvg of its inputs"


def check_request(
    stack: Stack, model_request: ModelRequest, rounds: int, *, retries: bool = False
) -> None:
    """The request completed with one model version per round (and, unless ``retries``, no
    round retried); FedAvg holds; no file left; nothing stuck; the consent log verifies."""
    wait_for(
        lambda: (
            ModelRequest.objects.get(pk=model_request.pk).status
            in (ModelRequest.Status.COMPLETED, ModelRequest.Status.FAILED)
        ),
        4 * STAGE_SECONDS,
        "the request to finish",
    )
    model_request.refresh_from_db()
    assert model_request.status == ModelRequest.Status.COMPLETED, model_request.status_reason
    all_rounds = TrainingRound.objects.filter(model_request=model_request)
    completed = all_rounds.filter(status=TrainingRound.Status.COMPLETED).order_by("number")
    assert [r.number for r in completed] == list(range(1, rounds + 1))
    if not retries:
        assert sorted(all_rounds.values_list("attempt", flat=True)) == [1] * rounds
    assert not all_rounds.exclude(status__in=["completed", "aborted"]).exists()  # none stuck
    versions = ModelVersion.objects.filter(model_request=model_request).values_list(
        "round_number", flat=True
    )
    assert sorted(versions) == list(range(rounds + 1))  # the initial model, one per round
    check_fedavg(stack, model_request)
    assert (
        not RoundParticipant.objects.filter(round__model_request=model_request)
        .exclude(masked_input="")
        .exists()
    )
    leftovers = [
        p
        for p in stack.media.rglob("*")
        if p.is_file() and ("aggregates" in p.parts or "masked" in p.parts)
    ]
    assert leftovers == []
    # A killed worker's task comes back after the visibility timeout (a no-op by then).
    wait_for(lambda: int(broker().hlen("unacked")) == 0, 60, "no task left unacknowledged")
    out, err = io.StringIO(), io.StringIO()
    call_command("verify_consent_log", stdout=out, stderr=err)
    assert "intact" in out.getvalue(), err.getvalue()


def reserved_tasks() -> list[str]:
    """Task names the broker has handed to a worker that has not acknowledged them."""
    names = []
    for raw in broker().hvals("unacked"):
        message = json.loads(raw)[0]
        names.append(str(message.get("headers", {}).get("task")))
    return names


def queued() -> int:
    return int(broker().llen("celery"))
