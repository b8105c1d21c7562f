"""Importing real exports: a column map, blank cells by the field's policy, delimiter and
encoding sniffing, strict line-numbered errors, all or nothing; per-field summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from pods.agent.importer import ImportFailed, Options, import_file, parse_options
from pods.agent.store import LocalStore
from pods.agent.summary import category_summary, summary_lines
from tests.typed_category import EXPORT_MAP, FIELDS, export_csv, records

OPTIONS = parse_options(EXPORT_MAP, [], ["NA"])


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_an_export_is_mapped_and_blank_cells_follow_the_policy(tmp_path: Path) -> None:
    rows = records(20, seed=1)
    imported = import_file(write(tmp_path, export_csv(rows)), FIELDS, OPTIONS)
    assert (imported.encoding, imported.delimiter) == ("utf-8", ";")
    assert len(imported.rows) == 20
    assert imported.rows[0] == {k: v for k, v in rows[0].items()}
    assert imported.rows[3]["activity"] is None  # blank: stored missing, filled when used
    assert imported.rows[5]["sleep_hours"] is None
    summary = category_summary(FIELDS, imported.rows)
    assert summary["fields"]["activity"]["missing"] == 3
    assert summary["fields"]["age"]["min"] == min(r["age"] for r in rows)
    assert summary["fields"]["activity"]["missing_policy"] == "fill medium"
    lines = summary_lines("wellbeing.sleep_diary", summary)
    assert lines[0] == "wellbeing.sleep_diary: 20 records"
    assert any(line.startswith("  age (int years): 20 values, 0 missing; from ") for line in lines)


@pytest.mark.parametrize(
    ("encoding", "prefix", "expected"),
    [("utf-8", "", "utf-8"), ("utf-8", "\ufeff", "utf-8-sig"), ("latin-1", "", "latin-1")],
)
def test_encodings_are_sniffed(tmp_path: Path, encoding: str, prefix: str, expected: str) -> None:
    rows = records(3, seed=2)
    rows[0]["diary"] = "café au lait, très bien"
    text = prefix + export_csv(rows, blank_every=0, delimiter="\t")
    imported = import_file(write(tmp_path, text, encoding), FIELDS, OPTIONS)
    assert (imported.encoding, imported.delimiter) == (expected, "\t")
    assert imported.rows[0]["diary"] == "café au lait, très bien"


HEADER = ";".join(["Activity", "Age (years)", "Sleep", "Smoker", "Diary", "Rested", "Mood", "Day"])
GOOD = "high;40;7.5;no;x;yes;3;2024-01-02"


@pytest.mark.parametrize(
    ("body", "options", "message"),
    [
        (GOOD.replace("yes;3", "NA;3"), OPTIONS, "line 3: missing value for 'rested'"),
        (GOOD.replace("40", "120"), OPTIONS, "line 3, field 'age': 120 is outside the range"),
        (GOOD.replace("7.5", "7,5"), OPTIONS, "line 3, field 'sleep_hours': expected float"),
        (GOOD.replace("high", "extreme"), OPTIONS, "'extreme' is not one of the category's"),
        (GOOD.replace("2024-01-02", "02/01/2024"), OPTIONS, "field 'day': expected date"),
        (GOOD.replace("yes;3", ";3"), OPTIONS, "line 3: missing value for 'rested'"),
        (GOOD, Options(), "line 1: unknown column 'Activity' (--map Activity=FIELD"),
        (GOOD, parse_options([*EXPORT_MAP, "Extra=age"], [], []), "--map names no column"),
        (GOOD, parse_options(["Activity=colour"], [], []), "--map names no field 'colour'"),
        (
            GOOD,
            parse_options([m for m in EXPORT_MAP if not m.startswith("Rested")], ["Rested"], []),
            "line 1: no column for field 'rested'",
        ),
    ],
)
def test_bad_exports_are_refused_whole_with_the_line(
    tmp_path: Path, body: str, options: Options, message: str
) -> None:
    text = f"{HEADER}\n{GOOD}\n{body}\n"
    with pytest.raises(ImportFailed) as excinfo:
        import_file(write(tmp_path, text), FIELDS, options)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_blank_cell_with_the_drop_policy_is_stored_missing(tmp_path: Path) -> None:
    text = f"{HEADER}\n{GOOD}\n{GOOD.replace(';40;', ';;')}\n"
    rows = import_file(write(tmp_path, text), FIELDS, OPTIONS).rows
    assert rows[1]["age"] is None
    store = LocalStore(tmp_path / "store.sqlite3")
    store.add_records("wellbeing.sleep_diary", FIELDS, rows)
    assert store.records("wellbeing.sleep_diary")[1]["age"] is None
    assert store.fields("wellbeing.sleep_diary") == FIELDS
    store.close()


def test_map_options_are_checked() -> None:
    with pytest.raises(ImportFailed, match="SOURCE=FIELD"):
        parse_options(["age"], [], [])
    with pytest.raises(ImportFailed, match="twice"):
        parse_options(["a=age", "a=mood"], [], [])
