"""Typed catalog fields: what a category's field holds, and how a value is read and encoded.

One pure module read by every side — the catalog loader and the submission check on the server,
the provider's offline ``check``, the pod's importer and the pod's data path — so that a value
is read, checked and turned into model inputs the same way everywhere.

A field is ``{"name", "type", "unit", "description"}`` plus, optionally:

- ``"range": [lo, hi]`` (int, float, date): the values a record may hold;
- ``"missing": "drop"`` (a record missing it is not used by a request that uses the field) or
  ``{"fill": value}`` (a declared value stands in); without it a value is required;
- categorical only: ``"values": [...]`` (its vocabulary) and ``"encoding"``: ``"one_hot"``
  (one input per value, the default) or ``"index"`` (one input: the value's position, e.g. for
  an embedding layer).

Types: ``float``, ``int``, ``bool``, ``categorical``, ``date`` (ISO ``YYYY-MM-DD``, encoded as
days since 1970-01-01) and ``string``: free text, which a pod may hold but no model can train
on — a request using it as a feature or label is refused.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

FIELD_TYPES = ("float", "int", "bool", "string", "categorical", "date")
TRAINABLE = ("float", "int", "bool", "categorical", "date")
ENCODINGS = ("one_hot", "index")
KEYS = ("name", "type", "unit", "description", "range", "missing", "values", "encoding")
MAX_VALUES = 1000

TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no"})
# RFC 8259 §6 numbers, ASCII digits only (str.isdigit and float() accept far more).
INT_TEXT = re.compile(r"[+-]?[0-9]+")
FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Python refuses int() of longer digit strings (CVE-2020-10735); say so plainly instead.
MAX_INT_DIGITS = 4300
EPOCH = date(1970, 1, 1)


class FieldError(ValueError):
    """A field declaration or a value that does not fit it; the message is one line."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    unit: str = ""
    description: str = ""
    values: tuple[str, ...] = ()
    encoding: str | None = None
    range: tuple[Any, Any] | None = None
    missing: str = "required"  # required | drop | fill
    fill: Any = None

    @property
    def trainable(self) -> bool:
        return self.type in TRAINABLE

    @property
    def width(self) -> int:
        """How many model inputs the field becomes."""
        if self.type == "categorical" and self.encoding == "one_hot":
            return len(self.values)
        return 1

    def as_dict(self) -> dict[str, Any]:
        """The catalog form (what ``data.schema`` in a spec repeats)."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "unit": self.unit,
            "description": self.description,
        }
        if self.type == "categorical":
            out["values"] = list(self.values)
            out["encoding"] = self.encoding
        if self.range is not None:
            out["range"] = list(self.range)
        if self.missing == "drop":
            out["missing"] = "drop"
        elif self.missing == "fill":
            out["missing"] = {"fill": self.fill}
        return out

    def describe(self, _: Callable[[str], str] = str) -> str:
        """The field's kind in plain words, for notices and summaries. ``_`` translates each
        phrase (the portal passes Django's ``gettext``; this module stays free of Django)."""
        kinds = {
            "float": _("a number"),
            "int": _("a whole number"),
            "bool": _("yes or no"),
            "date": _("a date"),
            "string": _("free text"),
        }
        if self.type == "categorical":
            shown = ", ".join(self.values[:8]) + (", …" if len(self.values) > 8 else "")
            kind = _("one of %(values)s") % {"values": shown}
        else:
            kind = kinds[self.type]
        if self.range is not None:
            lo, hi = (f"{v:g}" if isinstance(v, float) else str(v) for v in self.range)
            kind = _("%(kind)s from %(low)s to %(high)s") % {"kind": kind, "low": lo, "high": hi}
        if self.unit:
            kind = _("%(kind)s, in %(unit)s") % {"kind": kind, "unit": self.unit}
        return kind


# --- reading declarations ---------------------------------------------------------------------


def _text(raw: Mapping[str, Any], key: str, path: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise FieldError(f"{path}.{key} must be a string.", f"{path}.{key}")
    return value


def parse_field(raw: Any, path: str = "field") -> Field:
    """A field declaration, checked whole; :class:`FieldError` names the part at fault."""
    if not isinstance(raw, dict):
        raise FieldError(f"{path} must be an object.", path)
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise FieldError(f"{path} has unknown keys: {', '.join(unknown)}.", path)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise FieldError(f"{path}.name must be a non-empty string.", f"{path}.name")
    kind = raw.get("type")
    if kind not in FIELD_TYPES:
        raise FieldError(
            f"{path}.type must be one of {', '.join(FIELD_TYPES)} "
            "(string is free text: a pod may hold it, no model can train on it).",
            f"{path}.type",
        )
    values: tuple[str, ...] = ()
    encoding = None
    if kind == "categorical":
        listed = raw.get("values")
        if (
            not isinstance(listed, list)
            or not 2 <= len(listed) <= MAX_VALUES
            or not all(isinstance(v, str) and v.strip() and len(v) <= 200 for v in listed)
        ):
            raise FieldError(
                f"{path}.values must list 2 to {MAX_VALUES} non-empty texts.", f"{path}.values"
            )
        if len(set(listed)) != len(listed):
            raise FieldError(f"{path}.values lists a value twice.", f"{path}.values")
        values = tuple(listed)
        encoding = raw.get("encoding", "one_hot")
        if encoding not in ENCODINGS:
            raise FieldError(
                f"{path}.encoding must be one of {', '.join(ENCODINGS)}.", f"{path}.encoding"
            )
    else:
        for key in ("values", "encoding"):
            if key in raw:
                raise FieldError(f"{path}.{key} is only for categorical fields.", f"{path}.{key}")
    base = Field(
        name=name,
        type=str(kind),
        unit=_text(raw, "unit", path),
        description=_text(raw, "description", path),
        values=values,
        encoding=encoding,
    )
    bounds = None
    if "range" in raw:
        bounds = _parse_range(base, raw["range"], f"{path}.range")
    missing, fill = "required", None
    if "missing" in raw:
        policy = raw["missing"]
        if policy == "drop":
            missing = "drop"
        elif isinstance(policy, dict) and set(policy) == {"fill"}:
            missing = "fill"
            checked = Field(**{**base.__dict__, "range": bounds})
            try:
                fill = read_value(checked, policy["fill"])
                if fill is MISSING:
                    raise FieldError("a fill value cannot itself be missing")
                check_range(checked, fill)
            except FieldError as exc:
                raise FieldError(f"{path}.missing.fill: {exc.message}", f"{path}.missing") from None
        else:
            raise FieldError(
                f'{path}.missing must be "drop" or {{"fill": value}}.', f"{path}.missing"
            )
    return Field(**{**base.__dict__, "range": bounds, "missing": missing, "fill": fill})


def _parse_range(base: Field, raw: Any, path: str) -> tuple[Any, Any]:
    if base.type not in ("int", "float", "date"):
        raise FieldError(f"{path} is only for int, float and date fields.", path)
    if not isinstance(raw, list) or len(raw) != 2:
        raise FieldError(f"{path} must be a list [lowest, highest].", path)
    try:
        lo, hi = (read_value(base, v) for v in raw)
    except FieldError as exc:
        raise FieldError(f"{path}: {exc.message}", path) from None
    if lo is MISSING or hi is MISSING or number(base, lo) > number(base, hi):
        raise FieldError(f"{path} must be [lowest, highest] with lowest ≤ highest.", path)
    return lo, hi


def parse_fields(raw: Any, path: str = "fields") -> tuple[Field, ...]:
    """A category's field list: non-empty, names unique."""
    if not isinstance(raw, list) or not raw:
        raise FieldError("The field schema must be a non-empty list.", path)
    fields = tuple(parse_field(item, f"{path}[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for index, item in enumerate(fields):
        if item.name in seen:
            raise FieldError(
                f"{path}[{index}].name {item.name!r} appears twice.", f"{path}[{index}].name"
            )
        seen.add(item.name)
    return fields


def plain_number(name: str) -> Field:
    """What a spec without ``data.schema`` assumes of a field: a required number."""
    return Field(name=name, type="float")


# --- reading values ---------------------------------------------------------------------------


def read_value(f: Field, value: Any, missing_tokens: Iterable[str] = ()) -> Any:
    """A value from a CSV cell (text) or JSON, read strictly as the field's type: MISSING for
    an empty cell or JSON null; :class:`FieldError` ("expected int, got '4x'") otherwise."""
    text = value.strip() if isinstance(value, str) else value
    if text is None or text == "" or (isinstance(text, str) and text in set(missing_tokens)):
        return MISSING
    try:
        return _read(f, text)
    except FieldError:
        raise
    except (TypeError, ValueError, OverflowError):
        raise FieldError(f"expected {f.type}, got {repr(value)[:40]}") from None


def _read(f: Field, text: Any) -> Any:
    kind = f.type
    if kind == "float":
        if isinstance(text, bool) or not isinstance(text, int | float | str):
            raise ValueError
        if isinstance(text, str) and (not FLOAT_TEXT.fullmatch(text) or len(text) > MAX_INT_DIGITS):
            raise ValueError
        number_ = float(text)
        if not math.isfinite(number_):
            raise ValueError
        return number_
    if kind == "int":
        if isinstance(text, bool):
            raise ValueError
        if isinstance(text, float) and text.is_integer():
            return int(text)
        if isinstance(text, str) and INT_TEXT.fullmatch(text):
            if len(text.lstrip("+-")) > MAX_INT_DIGITS:
                raise FieldError(f"integer longer than {MAX_INT_DIGITS} digits")
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
    if kind == "categorical":
        if not isinstance(text, str) or text not in f.values:
            raise FieldError(f"{repr(text)[:40]} is not one of the category's values")
        return text
    if kind == "date":
        if not isinstance(text, str) or not DATE_TEXT.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text).isoformat()
    if not isinstance(text, str):
        raise ValueError
    return text


def number(f: Field, value: Any) -> float:
    """A read value as the one number it encodes to (categorical: its index)."""
    if f.type == "date":
        return float((date.fromisoformat(value) - EPOCH).days)
    if f.type == "categorical":
        return float(f.values.index(value))
    if f.type == "string":
        raise FieldError("free text is not a number")
    return float(value)


def check_range(f: Field, value: Any) -> None:
    if f.range is not None and not (
        number(f, f.range[0]) <= number(f, value) <= number(f, f.range[1])
    ):
        raise FieldError(f"{str(value)[:40]} is outside the range {f.range[0]} to {f.range[1]}")


def encode_value(f: Field, value: Any) -> list[float]:
    if f.type == "categorical" and f.encoding == "one_hot":
        hot = [0.0] * len(f.values)
        hot[f.values.index(value)] = 1.0
        return hot
    return [number(f, value)]


# --- the pod's data path ----------------------------------------------------------------------


@dataclass
class Encoded:
    """Model inputs and labels, and how many records were set aside or filled, and why.
    The counts are the pod's own: they never leave the device."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float64]
    dropped: Counter[str] = field(default_factory=Counter)
    filled: Counter[str] = field(default_factory=Counter)

    @property
    def used(self) -> int:
        return len(self.x)


def label_domain(loss: str, output_shape: Sequence[int]) -> Callable[[float], bool]:
    """Which label values a loss and output layer can take (others are set aside, never
    trained on: a class index 9 with two outputs would fail inside the loss)."""
    if loss == "cross_entropy":
        classes = int(output_shape[-1]) if output_shape else 0
        return lambda v: v.is_integer() and 0 <= v < classes
    if loss == "bce_with_logits":
        return lambda v: 0.0 <= v <= 1.0
    return math.isfinite


def encode_rows(
    rows: Iterable[Mapping[str, Any]],
    schema: Mapping[str, Field],
    features: Sequence[str],
    label: str | None,
    *,
    label_ok: Callable[[float], bool] = math.isfinite,
) -> Encoded:
    """Records → model inputs, exactly as the schema and the plan say: each used field read
    strictly, range-checked, and encoded (one-hot, index, days, 0/1). A value that is missing,
    of the wrong type or out of range is handled by its field's policy: filled with the
    declared value, or the record is set aside (``drop``, and always when no policy says how
    to fill it). Set-aside records are counted by reason, never used."""
    used = [schema[name] for name in features]
    label_field = schema[label] if label else None
    xs: list[list[float]] = []
    ys: list[float] = []
    out = Encoded(np.zeros((0, 0), np.float32), np.zeros(0))
    for row in rows:
        inputs: list[float] = []
        ok = True
        for f in [*used, *([label_field] if label_field else [])]:
            value, problem = _value(f, row.get(f.name))
            if problem is not None:
                if f.missing == "fill":
                    value = f.fill
                    out.filled[f"{problem}:{f.name}"] += 1
                else:
                    out.dropped[f"{problem}:{f.name}"] += 1
                    ok = False
                    break
            if f is label_field:
                target = number(f, value)
                if not label_ok(target):
                    out.dropped[f"label_outside_model:{f.name}"] += 1
                    ok = False
                    break
                ys.append(target)
            else:
                inputs.extend(encode_value(f, value))
        if ok:
            xs.append(inputs)
    width = sum(f.width for f in used)
    out.x = np.asarray(xs, dtype=np.float32).reshape(len(xs), width)
    out.y = np.asarray(ys if label_field else np.zeros(len(xs)), dtype=np.float64)
    return out


def _value(f: Field, raw: Any) -> tuple[Any, str | None]:
    try:
        value = read_value(f, raw)
        if value is MISSING:
            return None, "missing"
        check_range(f, value)
    except FieldError:
        return None, "invalid"
    return value, None
