"""Import CSV or JSON-lines files into the local store, validated against the catalog schema.

Real exports, read strictly: columns are renamed with a map (``--map "Date of birth=dob"``)
or left out by name (``--ignore``); the delimiter (``,`` ``;`` tab ``|``) is taken from the
header line, the encoding is UTF-8 (with or without a BOM) or else Latin-1. Every value is read
as its field's type (training/modelspec/fields.py) and checked against its range; an empty cell
(or a ``--missing`` token such as ``NA``) is stored as missing when the field's policy allows
it (``drop`` or a fill value, applied when a request uses the field) and refused otherwise.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.modelspec import safejson
from training.modelspec.fields import (
    MISSING,
    Field,
    FieldError,
    check_range,
    parse_fields,
    read_value,
)

MAX_JSON_DEPTH = 4
DELIMITERS = (",", ";", "\t", "|")


class ImportFailed(Exception):
    """A file that cannot be imported; the message is one line for people."""


@dataclass(frozen=True)
class Options:
    """How to read an export: source column → field, columns to leave out, missing tokens."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    missing: frozenset[str] = frozenset()


@dataclass
class Imported:
    rows: list[dict[str, Any]]
    encoding: str = "utf-8"
    delimiter: str = ","


def parse_options(maps: Sequence[str], ignore: Sequence[str], missing: Sequence[str]) -> Options:
    """``--map SOURCE=FIELD`` values (repeatable) into :class:`Options`."""
    mapping: dict[str, str] = {}
    for item in maps:
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ImportFailed(f"--map takes SOURCE=FIELD, not {item[:40]!r}")
        if source.strip() in mapping:
            raise ImportFailed(f"--map names column {source.strip()[:40]!r} twice")
        mapping[source.strip()] = target.strip()
    return Options(mapping, frozenset(ignore), frozenset(missing))


def _row(
    row: Mapping[str, Any], fields: Sequence[Field], line: int, options: Options
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        where = f"line {line}, field {f.name!r}"
        try:
            value = read_value(f, row.get(f.name), options.missing)
            if value is not MISSING:
                check_range(f, value)
        except FieldError as exc:
            raise ImportFailed(f"{where}: {exc.message}") from None
        if value is MISSING:
            if f.missing == "required":
                raise ImportFailed(f"line {line}: missing value for {f.name!r}")
            value = None  # the field's policy applies when a request uses it
        out[f.name] = value
    return out


def _columns(
    header: Sequence[str], fields: Sequence[Field], options: Options, *, every: bool = True
) -> list[str | None]:
    """Each source column's field (None: left out), checked against the catalog."""
    names = {f.name for f in fields}
    unmapped = sorted(set(options.mapping) - set(header))
    if unmapped:
        raise ImportFailed(f"line 1: --map names no column {unmapped[0][:40]!r}")
    bad = sorted(t for t in options.mapping.values() if t not in names)
    if bad:
        raise ImportFailed(f"line 1: --map names no field {bad[0][:40]!r} of the category")
    targets: list[str | None] = []
    for column in header:
        if column in options.ignore:
            targets.append(None)
            continue
        target = options.mapping.get(column, column)
        if target not in names:
            raise ImportFailed(
                f"line 1: unknown column {column[:40]!r} (--map {column[:40]}=FIELD, or "
                f"--ignore it)"
            )
        if target in targets:
            raise ImportFailed(f"line 1: duplicate column {target!r}")
        targets.append(target)
    absent = [f for f in fields if f.name not in targets and f.missing == "required" and every]
    if absent:
        raise ImportFailed(
            f"line 1: no column for field {absent[0].name!r} (--map COLUMN={absent[0].name})"
        )
    return targets


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ImportFailed(f"duplicate key {key[:40]!r}")
        seen[key] = value
    return seen


def _json_lines(text: str, fields: Sequence[Field], options: Options) -> list[dict[str, Any]]:
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
        try:
            targets = _columns(list(item), fields, options, every=False)
        except ImportFailed as exc:
            raise ImportFailed(str(exc).replace("line 1:", f"line {line}:", 1)) from None
        named = {t: v for t, v in zip(targets, item.values(), strict=True) if t is not None}
        rows.append(_row(named, fields, line, options))
    return rows


def sniff_delimiter(text: str) -> str:
    """The delimiter of a header line: the candidate it holds most often (``,`` on a tie)."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _csv(text: str, fields: Sequence[Field], options: Options) -> tuple[list[dict[str, Any]], str]:
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ImportFailed(f"line {line}: a NUL character")
    delimiter = sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    rows = []
    try:
        header = [h.strip() for h in next(reader, [])]
        duplicate = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if duplicate is not None:
            raise ImportFailed(f"line 1: duplicate column {duplicate!r}")
        targets = _columns(header, fields, options)
        for values in reader:
            line = reader.line_num
            if not values:
                continue
            if len(values) > len(header):
                raise ImportFailed(f"line {line}: more values than columns")
            named = {t: v for t, v in zip(targets, values, strict=False) if t is not None}
            rows.append(_row(named, fields, line, options))
    except csv.Error as exc:
        # e.g. "field larger than field limit (131072)", an unterminated quote
        raise ImportFailed(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return rows, delimiter


def read_text(path: Path) -> tuple[str, str]:
    """The file's text and its encoding: UTF-8 (a BOM is dropped), else Latin-1 (which reads
    any bytes: exports from older spreadsheet software)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.__class__.__name__}") from None
    try:
        return data.decode("utf-8-sig"), "utf-8-sig" if data[:3] == b"\xef\xbb\xbf" else "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def import_file(
    path: Path, raw_fields: Sequence[dict[str, Any]], options: Options | None = None
) -> Imported:
    """Read and validate every record of a CSV (with a header) or JSON-lines file."""
    options = options or Options()
    try:
        fields = parse_fields(list(raw_fields))
    except FieldError as exc:
        raise ImportFailed(f"the catalog's schema is invalid: {exc.message}") from None
    text, encoding = read_text(path)
    if not text.strip():
        raise ImportFailed(f"{path.name} is empty")
    delimiter = ","
    if path.suffix.lower() in {".json", ".jsonl", ".ndjson"}:
        rows = _json_lines(text, fields, options)
    else:
        rows, delimiter = _csv(text, fields, options)
    if not rows:
        raise ImportFailed(f"{path.name} has no records")
    return Imported(rows, encoding, delimiter)


def parse_records(
    path: Path, fields: Sequence[dict[str, Any]], options: Options | None = None
) -> list[dict[str, Any]]:
    """The records of a file (see :func:`import_file`)."""
    return import_file(path, fields, options).rows
