"""Import CSV or JSON-lines files into the local store, validated against the catalog schema.

A file is checked whole before anything is stored: one bad row (with its line number) and
nothing is imported. Every way a file can be malformed ends in :class:`ImportFailed` with a
one-line, line-numbered message, never a traceback: CSV syntax errors and fields over the csv
module's size limit, duplicate columns (a second ``age`` would silently win), JSON nested too
deep or holding NUL characters (``training.modelspec.safejson``), and numbers that only
Python reads — ``1_000``, ``0x1f``, ``١٢`` (Arabic-Indic digits), integers over 4300 digits.
Numbers are read as RFC 8259 §6 spells them, nothing more.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.modelspec import safejson

TRUE = {"true", "1", "yes"}
# RFC 8259 §6 numbers, ASCII digits only (str.isdigit and float() accept far more).
INT_TEXT = re.compile(r"[+-]?[0-9]+")
FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Python refuses int() of longer digit strings (CVE-2020-10735); say so plainly instead.
MAX_INT_DIGITS = 4300
MAX_JSON_DEPTH = 4
FALSE = {"false", "0", "no"}


class ImportFailed(Exception):
    """A file that cannot be imported; the message is one line for people."""


def _coerce(value: Any, kind: str, where: str) -> Any:
    text = value.strip() if isinstance(value, str) else value
    try:
        if kind == "float":
            if isinstance(text, bool) or not isinstance(text, int | float | str):
                raise ValueError
            if isinstance(text, str) and (
                not FLOAT_TEXT.fullmatch(text) or len(text) > MAX_INT_DIGITS
            ):
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
            if isinstance(text, str) and INT_TEXT.fullmatch(text):
                if len(text.lstrip("+-")) > MAX_INT_DIGITS:
                    raise ImportFailed(f"{where}: integer longer than {MAX_INT_DIGITS} digits")
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


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ImportFailed(f"duplicate key {key[:40]!r}")
        seen[key] = value
    return seen


def _json_lines(text: str, fields: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            # RFC 8259 §4: names SHOULD be unique; a repeated one would silently win.
            item = safejson.loads(raw, max_depth=MAX_JSON_DEPTH, object_pairs_hook=_unique_keys)
        except safejson.UnsafeJson as exc:
            reason = {
                "json_too_deep": f"JSON nested deeper than {MAX_JSON_DEPTH}",
                "json_nul": "a NUL character",
            }.get(exc.code, f"not valid JSON ({exc.message.removeprefix('Not valid JSON: ')})")
            raise ImportFailed(f"line {line}: {reason}") from None
        except ImportFailed as exc:
            raise ImportFailed(f"line {line}: {exc}") from None
        if not isinstance(item, dict):
            raise ImportFailed(f"line {line}: expected a JSON object")
        rows.append(_validate(item, fields, line))
    return rows


def _csv(text: str, fields: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ImportFailed(f"line {line}: a NUL character")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    try:
        header = next(reader, [])
        names = {f["name"] for f in fields}
        unknown = [h for h in header if h not in names]
        if unknown:
            raise ImportFailed(f"line 1: unknown column {unknown[0][:40]!r}")
        duplicate = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if duplicate is not None:
            raise ImportFailed(f"line 1: duplicate column {duplicate!r}")
        for values in reader:
            line = reader.line_num
            if not values:
                continue
            if len(values) > len(header):
                raise ImportFailed(f"line {line}: more values than columns")
            row = dict(zip(header, values, strict=False))
            rows.append(_validate(row, fields, line))
    except csv.Error as exc:
        # e.g. "field larger than field limit (131072)", an unterminated quote
        raise ImportFailed(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return rows


def parse_records(path: Path, fields: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read and validate every record of a CSV (with a header) or JSON-lines file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"cannot read {path}: {exc.__class__.__name__}") from None
    if not text.strip():
        raise ImportFailed(f"{path.name} is empty")
    if path.suffix.lower() in {".json", ".jsonl", ".ndjson"}:
        rows = _json_lines(text, fields)
    else:
        rows = _csv(text, fields)
    if not rows:
        raise ImportFailed(f"{path.name} has no records")
    return rows
