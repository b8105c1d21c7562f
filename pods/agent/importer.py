"""Import CSV or JSON-lines files into the local store, validated against the catalog schema.

A file is checked whole before anything is stored: one bad row (with its line number) and
nothing is imported.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}


class ImportFailed(Exception):
    """A file that cannot be imported; the message is one line for people."""


def _coerce(value: Any, kind: str, where: str) -> Any:
    text = value.strip() if isinstance(value, str) else value
    try:
        if kind == "float":
            if isinstance(text, bool):
                raise ValueError
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "int":
            if isinstance(text, bool):
                raise ValueError
            if isinstance(text, float) and text.is_integer():
                return int(text)
            if isinstance(text, str) and text.lstrip("+-").isdigit():
                return int(text)
            if isinstance(text, int):
                return text
            raise ValueError
        if kind == "bool":
            if isinstance(text, bool):
                return text
            if isinstance(text, str) and text.lower() in TRUE | FALSE:
                return text.lower() in TRUE
            raise ValueError
        if kind == "string":
            if not isinstance(text, str):
                raise ValueError
            return text
    except (TypeError, ValueError):
        shown = repr(value)[:40]
        raise ImportFailed(f"{where}: expected {kind}, got {shown}") from None
    raise ImportFailed(f"{where}: unknown field type {kind!r} in the catalog")


def _validate(row: dict[str, Any], fields: Sequence[dict[str, Any]], line: int) -> dict[str, Any]:
    names = [f["name"] for f in fields]
    unknown = [k for k in row if k not in names]
    if unknown:
        raise ImportFailed(f"line {line}: unknown column {unknown[0]!r}")
    missing = [n for n in names if n not in row or row[n] in ("", None)]
    if missing:
        raise ImportFailed(f"line {line}: missing value for {missing[0]!r}")
    return {
        f["name"]: _coerce(row[f["name"]], f["type"], f"line {line}, field {f['name']!r}")
        for f in fields
    }


def parse_records(path: Path, fields: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read and validate every record of a CSV (with a header) or JSON-lines file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"cannot read {path}: {exc.__class__.__name__}") from None
    if not text.strip():
        raise ImportFailed(f"{path.name} is empty")
    if path.suffix.lower() in {".json", ".jsonl", ".ndjson"}:
        rows = []
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                raise ImportFailed(f"line {line}: not valid JSON") from None
            if not isinstance(item, dict):
                raise ImportFailed(f"line {line}: expected a JSON object")
            rows.append(_validate(item, fields, line))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        names = {f["name"] for f in fields}
        unknown = [h for h in header if h not in names]
        if unknown:
            raise ImportFailed(f"line 1: unknown column {unknown[0]!r}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row:
                raise ImportFailed(f"line {line}: more values than columns")
            rows.append(_validate(dict(row), fields, line))
    if not rows:
        raise ImportFailed(f"{path.name} has no records")
    return rows
