"""What a pod holds, field by field, for its owner's eyes only (``dataspace-pod data``):
how many values each field has, how many are missing, and their range or their values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from training.modelspec.fields import Field, FieldError, number, parse_fields


def field_summary(f: Field, values: Sequence[Any]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    out: dict[str, Any] = {
        "type": f.type,
        "unit": f.unit,
        "count": len(present),
        "missing": len(values) - len(present),
    }
    if f.missing != "required":
        out["missing_policy"] = "drop" if f.missing == "drop" else f"fill {f.fill}"
    if not present:
        return out
    if f.type in ("int", "float", "date"):
        ordered = sorted(present, key=lambda v: number(f, v))
        out["min"], out["max"] = ordered[0], ordered[-1]
    elif f.type in ("bool", "categorical"):
        out["values"] = {str(k): n for k, n in Counter(present).most_common(20)}
    return out


def category_summary(
    raw_fields: Sequence[Mapping[str, Any]] | None, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Counts, missing values and ranges per field of one category's records."""
    try:
        fields = parse_fields(list(raw_fields or []))
    except FieldError:
        fields = ()
    return {
        "records": len(records),
        "fields": {f.name: field_summary(f, [r.get(f.name) for r in records]) for f in fields},
    }


def summary_lines(category: str, summary: Mapping[str, Any]) -> list[str]:
    """The summary as lines for a terminal."""
    lines = [f"{category}: {summary['records']} records"]
    for name, s in summary["fields"].items():
        unit = f" {s['unit']}" if s.get("unit") else ""
        parts = [f"  {name} ({s['type']}{unit}): {s['count']} values, {s['missing']} missing"]
        if "min" in s:
            parts.append(f"from {s['min']} to {s['max']}")
        if "values" in s:
            parts.append(", ".join(f"{k}: {n}" for k, n in s["values"].items()))
        if "missing_policy" in s:
            parts.append(f"missing: {s['missing_policy']}")
        lines.append("; ".join(parts))
    return lines
