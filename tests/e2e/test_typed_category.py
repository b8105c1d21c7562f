"""Any category, end to end (issue 14): a category the test makes up — categorical, int, float
and bool features with missing values, free text, a bool label — loaded with
``load_categories``; the provider checks its spec offline (``--write-spec`` adds the catalog's
schema) and submits it with the client; four real ``dataspace-pod`` processes import a
spreadsheet export with a column map and blank cells, ``run``, and train; the provider
downloads a model that beats every pod's local-only model on held-out records."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from consent.services import consent_grant
from dataspace.demo import demo_weights
from pods.agent.data import encode_for
from pods.agent.importer import import_file, parse_options
from pods.models import Pod
from tests.e2e.test_federation import agent, stack  # noqa: F401  (the live stack fixture)
from tests.live import LiveService, wait_for
from tests.typed_category import (
    EXPORT_MAP,
    FIELDS,
    SLUG,
    catalog_file,
    export_csv,
    records,
    sleep_spec,
)
from training.client import DataspaceClient
from training.client.cli import main as provider_cli
from training.models import ModelRequest
from training.modelspec import load_weights, validate_spec
from training.modelspec.trainer import evaluate, train_centralized
from training.services import provider_client_issue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

PODS = 4
PER_POD = 40
SEED = 4


def skewed_parts() -> list[list[dict[str, Any]]]:
    """Each pod's diary days: two pods mostly rested days, two mostly not (label skew)."""
    pool = records(2000, seed=SEED)
    rested = [r for r in pool if r["rested"]]
    tired = [r for r in pool if not r["rested"]]
    major = int(PER_POD * 0.9)
    parts = []
    for i in range(PODS):
        many, few = (rested, tired) if i < 2 else (tired, rested)
        minor = PER_POD - major
        parts.append(many[i * major : (i + 1) * major] + few[i * minor : (i + 1) * minor])
    return parts


def test_a_made_up_category_goes_the_whole_way(stack: dict[str, Any], settings: Any) -> None:  # noqa: F811
    server: LiveService = stack["server"]
    tmp: Path = stack["tmp"]
    settings.MEDIA_ROOT = server.env["MEDIA_ROOT"]
    catalog = catalog_file(tmp / "catalog.json")
    call_command("load_categories", str(catalog), stdout=open(os.devnull, "w"))  # noqa: SIM115

    # The provider tests locally first: the schema-less spec is refused as the service would
    # refuse it; --write-spec adds the catalog's schema, and that spec passes.
    spec_json = sleep_spec(schema=False, rounds=4, cohort_size=PODS, min_participants=3)
    weights = demo_weights(sleep_spec(), seed=SEED)
    (tmp / "spec.json").write_text(json.dumps(spec_json))
    (tmp / "weights.safetensors").write_bytes(weights)
    argv = ["check", str(tmp / "spec.json"), str(tmp / "weights.safetensors")]
    assert provider_cli([*argv, "--catalog", str(catalog)]) == 1
    written = tmp / "spec-with-schema.json"
    assert provider_cli([*argv, "--catalog", str(catalog), "--write-spec", str(written)]) == 0

    from tests.factories import ProviderFactory

    application, secret = provider_client_issue(provider=ProviderFactory())
    client = DataspaceClient(server.url, application.client_id, secret)
    request_id = str(client.submit(written, weights)["id"])
    model_request = ModelRequest.objects.get(pk=request_id)
    assert model_request.spec["data"]["schema"][0]["name"] == "activity"

    # Four pods import their spreadsheet exports: own column names, ';', blank cells.
    homes = tmp / "pods"
    call_command(
        "provision_pods",
        simulated=True,
        count=PODS,
        homes=homes,
        server=server.url,
        prefix="typed",
        stdout=open(os.devnull, "w"),  # noqa: SIM115
    )
    home_dirs = sorted(homes.iterdir())
    parts = skewed_parts()
    maps = [arg for m in EXPORT_MAP for arg in ("--map", m)]
    for i, home in enumerate(home_dirs):
        export = tmp / f"export{i}.csv"
        export.write_text(export_csv(parts[i]), encoding="utf-8")
        done = subprocess.run(
            agent(home, "--json", "import", "--category", SLUG, *maps, str(export)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["imported"], report["delimiter"]) == (PER_POD, ";")
        assert report["missing"] == {"activity": 6, "sleep_hours": 5}
    held = json.loads(
        subprocess.run(
            agent(home_dirs[0], "--json", "data"), capture_output=True, timeout=60
        ).stdout
    )
    assert held["fields"][SLUG]["fields"]["activity"]["missing"] == 6
    # What each pod trains on, read and encoded as the pod does (for the baseline below).
    spec = validate_spec(model_request.spec)
    options = parse_options(EXPORT_MAP, [], [])
    local_data = [
        encode_for(spec, import_file(tmp / f"export{i}.csv", FIELDS, options).rows, FIELDS)
        for i in range(PODS)
    ]
    assert all(d.used == PER_POD and d.filled for d in local_data)
    pods = [
        Pod.objects.get(pk=json.loads((home / "state.json").read_text())["pod_id"])
        for home in home_dirs
    ]

    runners = [
        subprocess.Popen(
            agent(home, "--json", "run", "--max-backoff", "2"),
            stdout=(tmp / f"pod{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for i, home in enumerate(home_dirs)
    ]
    try:
        from pods.presence import online_pods

        wait_for(
            lambda: online_pods().filter(pk__in=[p.pk for p in pods]).count() == PODS,
            90,
            "pods online",
        )
        for pod in pods:
            consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        final = wait_for(
            lambda: (
                client.status(request_id)["status"] in ("completed", "failed")
                and client.status(request_id)
            ),
            400,
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
    logs = [(tmp / f"pod{i}.log").read_text() for i in range(PODS)]
    events = [json.loads(line) for log in logs for line in log.splitlines() if line.startswith("{")]
    data_events = [e for e in events if e.get("event") == "data"]
    assert data_events and all(e["used"] == PER_POD for e in data_events)
    assert all(
        e["filled"] == {"missing:activity": 6, "missing:sleep_hours": 5} for e in data_events
    )
    assert not [e for e in events if e.get("event") == "declined"], events

    # The provider's model beats every pod's local-only model on held-out diary days.
    client.download(request_id, tmp / "model.safetensors")
    client.close()
    test = encode_for(spec, records(400, seed=SEED + 1000), FIELDS)
    model = load_weights((tmp / "model.safetensors").read_bytes(), spec)
    federated = evaluate(spec, model, test.x, test.y).accuracy
    initial = load_weights(weights, spec)
    epochs = spec.training.rounds * spec.training.local_epochs
    local = [
        evaluate(
            spec,
            train_centralized(spec, initial, d.x, d.y, epochs=epochs, seed=SEED),
            test.x,
            test.y,
        ).accuracy
        for d in local_data
    ]
    assert federated > max(local), (federated, local)
