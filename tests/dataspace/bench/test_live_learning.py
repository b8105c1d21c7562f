"""``python -m dataspace.bench.live_learning``: one configuration through a real server and a
``simulate`` process, next to the in-process bench's run of the same configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.e2e
def test_live_run_completes_and_prints_both_curves() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    done = subprocess.run(
        [sys.executable, "-m", "dataspace.bench.live_learning", "--pods", "6", "--rounds", "2"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["live_status"] == "completed"
    assert len(figures["live_accuracy_per_round"]) == len(figures["bench_accuracy_per_round"]) == 2
    assert figures["live_accuracy"] == figures["live_accuracy_per_round"][-1]
    assert all(0.0 < a <= 1.0 for a in figures["live_accuracy_per_round"])
    assert all(e is not None for e in figures["live_federated_eval_per_round"])
