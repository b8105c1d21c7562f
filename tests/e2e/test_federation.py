"""The product's main job across real processes: a live ASGI server, a Celery worker (with beat:
stage deadlines and the aggregation tree), eight `dataspace-pod run` processes with their own
local stores, a provider on the real API — all on PostgreSQL and Redis over real sockets.

One pod dies while masked inputs are collected and one while unmasking; the round's aggregate
still equals the plain FedAvg of the pods whose inputs are in the sum (recomputed here from the
pods' data and the round's public seed). A person withdraws in the portal mid-request; their
pod is in no later cohort. The provider's model beats every pod's local-only model. Finally the
database, media and logs are scanned: no raw record and no unmasked individual update.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from consent.models import Consent
from consent.services import consent_grant
from dataspace.demo import breast_features, demo_request_spec, demo_weights
from dataspace.processes import stop
from pods.agent import datasets
from pods.agent.plan import PlanPrivacy, contribution
from pods.models import Pod
from tests.live import ROOT, LiveService, database_url, on_test_database, pod_command, wait_for
from tests.portal_http import PortalSession
from training.client import DataspaceClient
from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound
from training.modelspec import load_weights, validate_spec
from training.modelspec.trainer import evaluate, train_centralized, train_local
from training.modelspec.vectors import flatten_state
from training.services import provider_client_issue

pytestmark = pytest.mark.django_db(transaction=True)

PODS = 8
SEED = 3
ALPHA = 0.05
CRASH = {0: "masked_input", 1: "unmask"}  # pod position → the stage it dies at
LEAVER = 2


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Server + Celery worker (beat embedded), on the test database and Redis."""
    server = on_test_database(
        tmp_path / "server", ROUND_STAGE_SECONDS="8", ROUNDS_TICK_IN_PROCESS="0"
    )
    (tmp_path / "server").mkdir()
    server.start()
    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dataspace",
            "worker",
            "--beat",
            "--schedule",
            str(tmp_path / "beat-schedule"),
            "--concurrency",
            "2",
            "--loglevel",
            "info",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env={**server.env, "ROUNDS_TICK_SECONDS": "1"},
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield {"server": server, "worker": worker, "worker_log": worker_log, "tmp": tmp_path}
    finally:
        stop(worker)
        server.stop()


NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")


def holds_record(numbers: set[str], row: np.ndarray) -> bool:
    """Three or more of a record's exact values among a text's numbers."""
    return sum(repr(float(v)) in numbers for v in row if float(v) != int(v)) >= 3


def pod_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*breast_features(), "diagnosis"])
        for row, label in zip(x, y, strict=True):
            writer.writerow([*(repr(float(v)) for v in row), int(label)])


def agent(home: Path, *args: str) -> list[str]:
    return [*pod_command(), "--home", str(home), *args]


def test_federation_across_processes(stack: dict[str, Any], settings: Any) -> None:
    server: LiveService = stack["server"]
    tmp: Path = stack["tmp"]
    settings.MEDIA_ROOT = server.env["MEDIA_ROOT"]  # read the files the server and worker wrote
    dataset = datasets.load("breast_screening")
    pool, test = datasets.split(dataset, seed=SEED)
    x_test, y_test = dataset.x[test].astype(np.float32), dataset.y[test]
    parts = datasets.partition(dataset.y[pool], PODS, alpha=ALPHA, seed=SEED)
    data = [(dataset.x[pool][rows], dataset.y[pool][rows]) for rows in parts]

    # The provider submits through the real API (OAuth2 client credentials).
    spec_json = demo_request_spec(
        rounds=5,
        cohort_size=PODS,
        min_participants=4,
        standardize=(list(x_test.mean(0).astype(float)), list(x_test.std(0).astype(float) + 1e-6)),
        local_epochs=1,
        lr=0.1,
    )
    from tests.factories import ProviderFactory, breast_category

    breast_category()
    application, secret = provider_client_issue(provider=ProviderFactory())
    client = DataspaceClient(server.url, application.client_id, secret)
    request_id = str(client.submit(spec_json, demo_weights(spec_json, seed=SEED))["id"])
    model_request = ModelRequest.objects.get(pk=request_id)

    # Eight pods: provisioned, each importing its own records with the real CLI.
    homes = tmp / "pods"
    call_command(
        "provision_pods",
        simulated=True,
        count=PODS,
        homes=homes,
        server=server.url,
        prefix="e2e",
        stdout=open(os.devnull, "w"),  # noqa: SIM115
    )
    home_dirs = sorted(p for p in homes.iterdir())
    imports = []
    for i, home in enumerate(home_dirs):
        pod_csv(tmp / f"pod{i}.csv", *data[i])
        imports.append(
            subprocess.Popen(
                agent(
                    home,
                    "import",
                    "--category",
                    "health.breast_screening",
                    str(tmp / f"pod{i}.csv"),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for process in imports:
        output = process.communicate(timeout=120)[0].decode()
        assert process.returncode == 0, output
    for i in range(PODS):
        (tmp / f"pod{i}.csv").unlink()  # the records now live only in the pods' stores
    pods = [
        Pod.objects.get(pk=json.loads((home / "state.json").read_text())["pod_id"])
        for home in home_dirs
    ]

    runners = []
    for i, home in enumerate(home_dirs):
        crash = ["--crash-at", CRASH[i]] if i in CRASH else []
        runners.append(
            subprocess.Popen(
                agent(home, "--json", "run", "--max-backoff", "2", *crash),
                stdout=(tmp / f"pod{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        from pods.presence import online_pods

        wait_for(
            lambda: online_pods().filter(pk__in=[p.pk for p in pods]).count() == PODS,
            90,
            "pods online",
        )
        with transaction.atomic():  # everyone agrees at once: round 1 draws all eight
            for pod in pods:
                consent_grant(user=pod.owner, model_request=model_request, pod=pod)

        first = wait_for(
            lambda: TrainingRound.objects.filter(
                model_request=model_request, number=1, status="completed"
            ).first(),
            180,
            "round 1",
        )
        # A person withdraws in the portal while the request is still training.
        leaver = pods[LEAVER]
        leaver.owner.set_password("withdraw-me-now")
        leaver.owner.save()
        consent = Consent.objects.get(user=leaver.owner, model_request=model_request)
        portal = PortalSession(server.url)
        portal.login(leaver.owner.username, "withdraw-me-now")
        response = portal.post_form(
            f"/requests/{request_id}/", f"/consents/{consent.pk}/withdraw/", {}
        )
        assert response.status_code in (200, 302), response.text[:300]
        withdrawal_answered = timezone.now()  # the withdrawal has committed by now
        portal.close()
        consent.refresh_from_db()
        assert consent.status == Consent.Status.WITHDRAWN

        final = wait_for(
            lambda: (
                client.status(request_id)["status"] in ("completed", "failed")
                and client.status(request_id)
            ),
            300,
            "the request to finish",
        )
        assert final["status"] == "completed", final
    finally:
        for process in runners:
            if process.poll() is None:
                process.terminate()
        for process in runners:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    assert [runners[i].returncode for i in CRASH] == [70, 70]  # they died where told

    # Round 1: one pod lost before sending its masked input, one after (still in the sum).
    first.refresh_from_db()
    by_pod = {p.pod_id: p for p in first.participants.all()}
    assert by_pod[pods[0].pk].dropped_at_stage == "masked_input"
    assert not by_pod[pods[1].pk].dropped  # its input is in; others unmasked for it
    survivors = [i for i, pod in enumerate(pods) if not by_pod[pod.pk].dropped]
    assert first.survivors == len(survivors) == PODS - 1

    # The aggregate equals the plain FedAvg of the survivors' contributions.
    spec = validate_spec(model_request.spec)
    base = load_weights(first.base_version.weights.open("rb").read(), spec)  # type: ignore[union-attr]
    plan = PlanPrivacy.of(spec)
    plain = {}
    for i in survivors:
        x, y = data[i]
        result = train_local(
            spec, base, x.astype(np.float32), y.astype(float), seed=first.metrics["seed"]
        )
        plain[i] = contribution(result, plan, spec)
    expected = sum(plain[i]["update"] for i in survivors) / sum(
        float(plain[i]["weight"][0]) for i in survivors
    )
    version1 = ModelVersion.objects.get(model_request=model_request, round_number=1)
    after = load_weights(version1.weights.open("rb").read(), spec)
    assert np.allclose(flatten_state(after, spec) - flatten_state(base, spec), expected, atol=1e-4)

    # At least three rounds; the leaver's pod is in no cohort drawn after the withdrawal.
    completed = TrainingRound.objects.filter(model_request=model_request, status="completed")
    assert completed.count() >= 3
    leaver_rounds = RoundParticipant.objects.filter(
        pod=pods[LEAVER], round__model_request=model_request
    )
    assert not leaver_rounds.filter(round__started_at__gt=withdrawal_answered).exists()
    # A cohort drawn while the withdrawal was being committed loses the pod at once: it is
    # dropped, never part of a later sum.
    assert consent.withdrawn_at is not None
    for late in leaver_rounds.filter(round__started_at__gt=consent.withdrawn_at):
        assert late.dropped and late.drop_reason in ("consent_withdrawn", "declined:no_consent")
    # (A round drawn before that keeps the pod only if it had passed masked-input collection:
    # tests/training/test_orchestrator.py checks the drop at once in the earlier stages.)

    # The provider's model beats every pod's local-only model on the held-out split.
    client.download(request_id, tmp / "model.safetensors")
    client.close()
    model = load_weights((tmp / "model.safetensors").read_bytes(), spec)
    federated = evaluate(spec, model, x_test, y_test).accuracy
    initial = load_weights(model_request.weights.open("rb").read(), spec)
    epochs = spec.training.rounds * spec.training.local_epochs
    local = [
        evaluate(
            spec,
            train_centralized(spec, initial, x.astype(np.float32), y, epochs=epochs, seed=SEED),
            x_test,
            y_test,
        ).accuracy
        for x, y in data
    ]
    history = [
        evaluate(spec, load_weights(v.weights.open("rb").read(), spec), x_test, y_test).accuracy
        for v in model_request.versions.order_by("round_number")
    ]
    assert federated > max(local), (federated, local, history)

    # No raw record and no unmasked update anywhere on the service side.
    dump = subprocess.run(
        ["pg_dump", "--data-only", database_url(connection.settings_dict)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert request_id in dump  # the scan sees the service's data
    media = [p for p in (tmp / "server").rglob("*") if p.is_file()]
    texts = {
        "database": dump,
        "server log": server.log(),
        "worker log": stack["worker_log"].read_text(errors="replace"),
        **{str(p): p.read_bytes().decode("latin-1") for p in media},
    }
    assert any("weights" in name or name.endswith(".safetensors") for name in texts)
    numbers = {where: set(NUMBER.findall(text)) for where, text in texts.items()}
    store = (home_dirs[3] / "store.sqlite3").read_bytes().decode("latin-1")
    assert holds_record(set(NUMBER.findall(store)), data[3][0][0])  # the scan can see a record
    for i, (x, _y) in enumerate(data):
        for row in x:
            for where, found in numbers.items():
                assert not holds_record(found, row), f"a record of pod {i} is in {where}"
    for i, parts_i in plain.items():
        update = parts_i["update"]
        probe = update[np.flatnonzero(update)[:8]].astype("<f4").tobytes()
        for where, text in texts.items():
            assert probe.decode("latin-1") not in text, f"pod {i}'s update is in {where}"
            assert probe.hex() not in text, f"pod {i}'s update is in {where} (hex)"
