"""``simulate --csv FILE --category SLUG``: pods over any category's records, read as the
importer reads them and split IID; both options go together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pods.agent.cli import main
from pods.agent.simulate import DataSource, partitions
from tests.typed_category import CATEGORY, SLUG, records


class Catalog:
    def categories(self) -> list[dict[str, Any]]:
        return [CATEGORY]


def sample(tmp_path: Path, n: int) -> Path:
    header = "activity,age,sleep_hours,smoker,diary,rested,mood,day"
    rows = [
        f"{r['activity']},{r['age']},{r['sleep_hours']},{str(r['smoker']).lower()},"
        f"note,{str(r['rested']).lower()},{r['mood']},{r['day']}"
        for r in records(n, seed=3)
    ]
    path = tmp_path / "diary.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_csv_is_split_across_pods_with_its_catalog_schema(tmp_path: Path) -> None:
    source = DataSource(sample(tmp_path, 10), SLUG)
    category, parts = partitions(Catalog(), source, 3, "iid", 0)  # type: ignore[arg-type]
    assert category == SLUG
    assert sorted(p.count() for p in parts) == [3, 3, 4]
    assert all(p.fields(SLUG) == CATEGORY["fields"] for p in parts)
    held = [r["day"] for p in parts for r in p.records(SLUG)]
    assert sorted(held) == sorted(r["day"] for r in records(10, seed=3))


def test_bad_sources_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="no category"):
        partitions(Catalog(), DataSource(sample(tmp_path, 3), "x.y"), 2, "iid", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 records cannot give 5 pods"):
        partitions(Catalog(), DataSource(sample(tmp_path, 3), SLUG), 5, "iid", 0)  # type: ignore[arg-type]
    bad = tmp_path / "bad.csv"
    bad.write_text("activity\nextreme\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 1: no column for field 'diary'"):
        partitions(Catalog(), DataSource(bad, SLUG), 1, "iid", 0)  # type: ignore[arg-type]
    code = main(["simulate", "--pods", "1", "--homes", str(tmp_path), "--csv", str(bad)])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "dataspace-pod: error: --csv and --category go together"
    )
