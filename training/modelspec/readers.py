"""Small typed readers of a JSON model spec's values: each returns the value or raises a
:class:`SpecError` naming where in the spec it is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import SpecError


def obj(value: Any, path: str, allowed: Sequence[str], required: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError("malformed_spec", f"{path or 'the spec'} must be an object.", path or None)
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise SpecError("unknown_field", f"Unknown field {key!r}.", where)
    for key in required:
        if key not in value:
            where = f"{path}.{key}" if path else key
            raise SpecError("invalid_value", f"Missing required field {key!r}.", where)
    return value


def integer(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError("invalid_value", "Must be a whole number.", path)
    if not lo <= value <= hi:
        raise SpecError("invalid_value", f"Must be between {lo} and {hi}.", path)
    return int(value)


def number(
    value: Any, path: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError("invalid_value", "Must be a number.", path)
    number = float(value)
    if not math.isfinite(number):
        raise SpecError("invalid_value", "Must be finite.", path)
    too_low = number <= lo if lo_open else number < lo
    too_high = number >= hi if hi_open else number > hi
    if too_low or too_high:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise SpecError("invalid_value", f"Must be in {left}{lo}, {hi}{right}.", path)
    return number


def text(value: Any, path: str, max_len: int = 200, *, allow_empty: bool = False) -> str:
    if (
        not isinstance(value, str)
        or (not allow_empty and not value.strip())
        or len(value) > max_len
    ):
        raise SpecError("invalid_value", f"Must be a text of 1 to {max_len} characters.", path)
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError("invalid_value", "Must be true or false.", path)
    return value
