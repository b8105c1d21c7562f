"""The federation benchmark's wiring (its figures are printed by ``make bench-federation``)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest


def test_the_federation_benchmark_starts_its_processes_from_the_repository() -> None:
    """It moved under dataspace/bench/: a server started from the package's folder found
    ``dataspace/celery.py`` as ``celery`` (seen: "the server did not start")."""
    from dataspace.bench import federation

    assert (federation.ROOT / "manage.py").is_file()


def test_a_child_that_exits_ends_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    """Seen: the simulator died at start and the benchmark waited its whole timeout (300 s)."""
    from dataspace.bench.children import Child, ChildExited, wait_for

    log = tmp_path / "pods.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys; print('no homes under /nowhere'); sys.exit(3)"],
            stdout=out,
        )
    with pytest.raises(ChildExited) as raised:
        # A timeout far beyond any test's: only the child's exit can end this wait early.
        wait_for(lambda: False, 3600, [Child("simulator", process, log)], every=0.05)
    message = str(raised.value)
    assert "the simulator exited with status 3" in message
    assert "no homes under /nowhere" in message


def test_a_live_child_leaves_the_wait_to_its_predicate(tmp_path: Path) -> None:
    from dataspace.bench.children import Child, wait_for

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        calls = iter(range(3))
        child = Child("server", process, tmp_path / "server.log")
        # True on the third poll.
        assert wait_for(lambda: next(calls) == 2, 60, [child], every=0.01)
        assert not wait_for(lambda: False, 0.05, [child], every=0.01)
    finally:
        process.kill()
        process.wait()


def test_digits_allow_a_thousand_pod_round() -> None:
    from dataspace.bench.federation import parse_args, pooled, request_spec
    from dataspace.catalog import BUNDLED
    from pods.agent.datasets import DATASETS
    from training.modelspec import validate_spec

    args = parse_args(["--dataset", "digits", "--pods", "1000", "--params", "10000"])
    assert (args.dataset, args.pods) == ("digits", 1000)
    assert pooled("digits") >= 1000
    spec = request_spec("digits", 1000, 10_000, 2)
    checked = validate_spec(spec)
    assert 9_000 <= checked.parameter_count <= 11_000
    assert spec["training"]["cohort_size"] == spec["training"]["min_participants"] == 1000
    # The features are the catalog's digit fields, the columns ``simulate --dataset digits``
    # holds (the label excluded).
    category, label = DATASETS["digits"]
    fields = next(c["fields"] for c in json.loads(BUNDLED.read_text()) if c["slug"] == category)
    assert spec["data"]["features"] == [f["name"] for f in fields if f["name"] != label]
    assert len(spec["data"]["features"]) == 64


def test_breast_screening_refuses_more_pods_than_it_has_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dataspace.bench.federation import parse_args, pooled

    assert parse_args(["--pods", "400"]).dataset == "breast_screening"
    assert parse_args(["--mode", "connections", "--pods", "1000"]).dataset == "digits"
    with pytest.raises(SystemExit) as raised:
        parse_args(["--pods", "1000"])
    assert raised.value.code == 2
    assert f"--pods must be 1 to {pooled('breast_screening')}" in capsys.readouterr().err


def test_stage_cpu_comes_from_the_samples_between_the_recorded_closes() -> None:
    from dataspace.bench.federation import cpu_between, stage_spans

    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    training_round = SimpleNamespace(
        started_at=start,
        finished_at=start + timedelta(seconds=4),
        metrics={
            "closed_at": {
                "share_keys": (start + timedelta(seconds=3)).isoformat(),
                "advertise_keys": (start + timedelta(seconds=1)).isoformat(),
            }
        },
    )
    spans = stage_spans(training_round)
    t0 = start.timestamp()
    assert spans == [
        ("advertise_keys", t0, t0 + 1),
        ("share_keys", t0 + 1, t0 + 3),
        ("aggregate", t0 + 3, t0 + 4),
    ]
    # CPU seconds: 0.5 over the first second, then 1 per second.
    samples = [(t0, 10.0), (t0 + 1, 10.5), (t0 + 4, 13.5)]
    assert [round(cpu_between(samples, a, b), 6) for _, a, b in spans] == [0.5, 2.0, 1.0]
    assert cpu_between(samples, t0 - 5, t0 + 9) == 3.5  # clamped to the samples


def test_the_scale_out_bench_needs_the_shared_database_and_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataspace.bench.scaleout import parse_args

    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SystemExit) as raised:
        parse_args(["--web", "2"])
    assert raised.value.code == 2
    assert "set DATABASE_URL (PostgreSQL) and REDIS_URL" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/6")
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
    assert parse_args(["--web", "2", "--pods", "10"]).web == 2
    with pytest.raises(SystemExit):
        parse_args(["--web", "0"])


def test_several_simulators_share_the_pods_evenly(capsys: pytest.CaptureFixture[str]) -> None:
    from dataspace.bench.federation import parse_args, shares

    assert shares(1000, 2) == [500, 500]
    assert shares(7, 3) == [3, 2, 2]
    assert sum(shares(101, 4)) == 101
    assert parse_args(["--pods", "10", "--simulators", "2"]).simulators == 2
    with pytest.raises(SystemExit):
        parse_args(["--pods", "2", "--simulators", "3"])
    assert "--simulators must be 1 to --pods" in capsys.readouterr().err
