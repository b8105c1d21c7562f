"""``dataspace-provider check``: offline, the service's own checks and one local round on a
sample, printing sizes only; ``--write-spec`` adds the catalog's schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataspace.demo import demo_weights
from tests.live import ROOT
from tests.typed_category import EXPORT_MAP, catalog_file, export_csv, records, sleep_spec
from training.client.cli import main


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    spec = sleep_spec()
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "weights.safetensors").write_bytes(demo_weights(spec))
    rows = records(40, seed=5)
    header = "activity,age,sleep_hours,smoker,diary,rested,mood,day"
    lines = [header] + [
        ",".join(
            [
                r["activity"] if i % 9 != 2 else "",
                str(r["age"]),
                repr(r["sleep_hours"]),
                str(r["smoker"]).lower(),
                r["diary"].replace(",", ""),
                str(r["rested"]).lower(),
                str(r["mood"]),
                r["day"],
            ]
        )
        for i, r in enumerate(rows)
    ]
    (tmp_path / "sample.csv").write_text("\n".join(lines) + "\n")
    return {
        "spec": tmp_path / "spec.json",
        "weights": tmp_path / "weights.safetensors",
        "sample": tmp_path / "sample.csv",
        "catalog": catalog_file(tmp_path / "catalog.json"),
    }


def test_check_runs_offline_without_credentials_and_reports_sizes(
    files: dict[str, Path],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASPACE", "DJANGO"))}
    env["DATASPACE_URL"] = "http://127.0.0.1:9"  # nothing listens: offline
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.client.cli",
            "--json",
            "check",
            str(files["spec"]),
            str(files["weights"]),
            "--catalog",
            str(files["catalog"]),
            "--sample",
            str(files["sample"]),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["inputs"] == 6 and report["outputs"] == [2]
    local = report["local_round"]
    assert (local["records"], local["used"]) == (40, 40)
    assert local["filled"] == {"missing:activity": 5}
    assert local["sends"]["update"] == report["parameters"]
    assert local["masked_input_bytes"] == 4 * sum(local["sends"].values())
    sleeps = [r["sleep_hours"] for r in records(40, seed=5)]
    assert not any(repr(v) in result.stdout for v in sleeps if len(repr(v)) > 3)  # sizes only


def test_check_refuses_what_the_service_would(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = sleep_spec(label="mood", outputs=2)
    files["spec"].write_text(json.dumps(spec))
    argv = ["check", str(files["spec"]), str(files["weights"]), "--catalog", str(files["catalog"])]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("dataspace-provider: error: label_not_fit: ")
    assert error.endswith("(at data.label)") and "\n" not in error

    # Without data.schema: refused as the service would, and --write-spec adds it.
    files["spec"].write_text(json.dumps(sleep_spec(schema=False)))
    files["weights"].write_bytes(demo_weights(sleep_spec()))
    assert main(argv) == 1
    assert "schema_required" in capsys.readouterr().err
    written = tmp_path / "with-schema.json"
    assert main([*argv, "--write-spec", str(written)]) == 0
    assert json.loads(written.read_text())["data"]["schema"] == sleep_spec()["data"]["schema"]


def test_the_sample_is_read_as_the_importer_reads_it(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"
    export.write_text(export_csv(records(5, seed=1)))  # its own column names: not mapped here
    argv = ["check", str(files["spec"]), str(files["weights"]), "--catalog", str(files["catalog"])]
    assert main([*argv, "--sample", str(export)]) == 1
    assert "line 1: unknown column 'Activity'" in capsys.readouterr().err
    assert EXPORT_MAP  # the pod's import takes --map for such files


def test_check_refuses_groups_the_cohort_cannot_hold(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Group value (issue 16): G groups of at least min_participants need that many pods."""
    spec = sleep_spec()
    cohort, minimum = spec["training"]["cohort_size"], spec["training"]["min_participants"]
    spec["valuation"] = {"groups": cohort // minimum + 1}
    files["spec"].write_text(json.dumps(spec))
    argv = ["check", str(files["spec"]), str(files["weights"]), "--catalog", str(files["catalog"])]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("dataspace-provider: error: valuation_groups_too_small: ")
    assert error.endswith("(at valuation.groups)")
