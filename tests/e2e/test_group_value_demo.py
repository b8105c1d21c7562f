"""Group value end to end (issue 16): the demo — a live server process, a ``dataspace-pod
simulate`` process of pods with their own keys and data, a provider on the API — with the
cohort split into two valued groups. Its report and the signed model card the provider
downloaded show every valued round's groups and values; no group covered fewer pods than the
plan's minimum; the card's signature verifies with the service's published key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pods.agent.consent import verify_signed

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_the_demo_with_groups_reports_and_signs_group_values(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        {
            "DEBUG": "1",
            "PYTHONPATH": str(ROOT),
            "DATASPACE_DATA_DIR": str(tmp_path / "var"),  # its own SQLite file and media
        }
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            *manage,
            "demo",
            "--pods",
            "40",
            "--rounds",
            "3",
            "--groups",
            "2",
            "--refuse",
            "0",
            "--output",
            str(out),
            "--timeout",
            "600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    section = report["group_value"]
    minimum = section["min_pods_per_group"]
    valued = [r for r in section["rounds"] if r["valued_in_round"]]
    assert len(section["rounds"]) == 3 and len(valued) == 2  # the last round is not valued
    for r in section["rounds"]:
        assert len(r["groups"]) == 2
        assert all(g["pods"] >= minimum for g in r["groups"])
    assert all(isinstance(g["value"], float) for r in valued for g in r["groups"])
    assert "group value, round 1" in done.stdout

    signed = json.loads((out / "model-card.json").read_text())
    card = signed["card"]
    assert card["group_value"]["rounds"] == section["rounds"]
    assert "Group value" in (out / "model-card.html").read_text()
    # The client verified the signature before saving the card; verify it again with the
    # service's published key (from the same data directory), and see tampering fail.
    published = subprocess.run(
        [
            *manage,
            "shell",
            "-c",
            "import json; from consent import receipts; print(json.dumps(receipts.public_jwks()))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    jwks = json.loads(published.stdout.strip().splitlines()[-1])
    assert verify_signed(signed, jwks, "card")["group_value"] == card["group_value"]
    card["group_value"]["rounds"][0]["groups"][0]["value"] = 1.0
    with pytest.raises(ValueError, match="does not verify"):
        verify_signed(signed, jwks, "card")
