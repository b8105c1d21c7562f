"""``python -m dataspace.bench.learning --quick``: a real process, every strategy, one JSON line
per configuration, a chart, and figures that are consistent with each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataspace.bench.learning import rounds_to
from dataspace.bench.learning_tasks import STRATEGIES

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dataspace.bench.learning", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_quick_bench_writes_one_line_per_configuration_and_a_chart(tmp_path: Path) -> None:
    done = run("--quick", "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [json.loads(x) for x in done.stdout.splitlines()] == lines
    # 2 data sets × (Dirichlet 0.1 uniform + Dirichlet 0.1 with slow pods) × 7 strategies
    keys = {(x["dataset"], x["devices"], x["strategy"]) for x in lines}
    assert len(lines) == len(keys) == 2 * 2 * len(STRATEGIES)
    for x in lines:
        assert len(x["accuracy_per_round"]) == x["rounds"] == 2
        assert 0.0 <= x["accuracy"] <= 1.0 and 0.0 < x["centralized_accuracy"] <= 1.0
        gap = x["target_gap_points"] / 100
        assert x["rounds_to_target"] == rounds_to(
            x["accuracy_per_round"], x["centralized_accuracy"] - gap
        )
        slow = x["devices"] != "uniform"
        assert x["target_gap_points"] == (5.0 if slow else 3.0)
        # Half the pods at a quarter of the step budget: the mean is (1 + 1/4) / 2 of it.
        if slow:
            assert x["mean_local_steps"] < 0.7 * x["local_steps_budget"]
        else:
            assert x["local_only_accuracy_mean"] is not None
    by = {(x["dataset"], x["devices"], x["strategy"]): x for x in lines}
    for dataset in ("digits", "breast_screening"):
        fedavg = by[dataset, "uniform", "fedavg"]
        dim = fedavg["model_parameters"]
        # SCAFFOLD sends Δc (model-sized) in the masked vector and receives c: twice the bytes.
        scaffold = by[dataset, "uniform", "scaffold"]
        assert scaffold["bytes_up_per_pod_round"] == fedavg["bytes_up_per_pod_round"] + 4 * dim
        assert scaffold["bytes_down_per_pod_round"] == 2 * fedavg["bytes_down_per_pod_round"]
        # FedNova: one coordinate more (the weighted step count).
        fednova = by[dataset, "uniform", "fednova"]
        assert fednova["bytes_up_per_pod_round"] == fedavg["bytes_up_per_pod_round"] + 4
        # Equal budgets and enough data: every pod took the whole budget.
        assert fednova["mean_local_steps"] == fedavg["mean_local_steps"]
    # Something is learnt: better than chance (10 classes) after two rounds.
    assert max(by["digits", "uniform", s]["accuracy"] for s in STRATEGIES) > 0.2
    png = (tmp_path / "learning.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "fedsgd"], "unknown data set or strategy: fedsgd"),
        (["--partitions", "dirichlet:-1"], "partition must be"),
        (["--pods", "1"], "--pods must be at least 2"),
    ],
)
def test_bad_arguments_get_a_one_line_error(args: list[str], message: str, tmp_path: Path) -> None:
    done = run(*args, "--output", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "results.jsonl").exists()
