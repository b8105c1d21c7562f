"""`manage.py load_categories`: idempotent, and a malformed file writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from dataspace.catalog import BUNDLED
from dataspace.models import DataCategory

pytestmark = pytest.mark.django_db


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "categories.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_bundled_catalog_loads_idempotently(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("load_categories", str(BUNDLED))
    assert "2 created, 0 updated" in capsys.readouterr().out
    call_command("load_categories", str(BUNDLED))
    assert "0 created, 0 updated" in capsys.readouterr().out
    breast = DataCategory.objects.get(slug="health.breast_screening")
    assert breast.special_category
    assert len(breast.fields) == 31 and breast.field("diagnosis") is not None
    digits = DataCategory.objects.get(slug="handwriting.digits")
    assert not digits.special_category
    assert len(digits.fields) == 65 and digits.field("digit") is not None


def test_changed_entry_is_updated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = json.loads(BUNDLED.read_text())
    call_command("load_categories", str(write(tmp_path, entries)))
    entries[1]["title"] = "Digits you wrote"
    call_command("load_categories", str(write(tmp_path, entries)))
    assert "0 created, 1 updated" in capsys.readouterr().out.splitlines()[-1]
    assert DataCategory.objects.get(slug="handwriting.digits").title == "Digits you wrote"


GOOD_FIELD = {"name": "x", "type": "float", "unit": "", "description": "x"}
GOOD = {
    "slug": "a.b",
    "title": "T",
    "description": "D",
    "special_category": False,
    "fields": [GOOD_FIELD],
}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON (line 1"),
        ({"slug": "a.b"}, "must hold a JSON list"),
        ([GOOD, {**GOOD, "slug": "Bad Slug"}], "entry 1 (Bad Slug): A category slug is dotted"),
        ([{**GOOD, "special_category": "yes"}], "special_category must be true or false"),
        (
            [{**GOOD, "fields": [{**GOOD_FIELD, "type": "complex"}]}],
            "type must be one of float, int, bool, string",
        ),
        ([{**GOOD, "fields": [GOOD_FIELD, GOOD_FIELD]}], "appears twice"),
        ([{**GOOD, "fields": []}], "non-empty list"),
        ([{k: v for k, v in GOOD.items() if k != "title"}], "missing title"),
        ([GOOD, GOOD], "appears more than once"),
        ([{**GOOD, "colour": "red"}], "unknown keys colour"),
    ],
)
def test_malformed_catalog_is_refused_and_nothing_written(
    tmp_path: Path, content: Any, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(CommandError) as excinfo:
        call_command("load_categories", str(path))
    assert message in str(excinfo.value)
    assert "Nothing was written" in str(excinfo.value)
    assert DataCategory.objects.count() == 0


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        call_command("load_categories", str(tmp_path / "nope.json"))
