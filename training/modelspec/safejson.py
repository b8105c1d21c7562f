"""Strict JSON reading for everything that comes from outside: one place, one set of refusals.

``json.loads`` recurses once per nesting level, so a body of ``[[[[...`` a few kilobytes long
raises ``RecursionError`` (a 500, or a dead WebSocket consumer) instead of a parse error; and
PostgreSQL refuses a NUL character in ``text`` and ``jsonb`` columns, so a ``"\\u0000"`` that
reaches the database is a 500 after other writes may already have happened. Both are refused
here, before anything uses the value, with a stable code:

- ``json_malformed``: not JSON (RFC 8259 §2), or a non-standard constant (``NaN``,
  ``Infinity``), or an integer longer than Python's 4300-digit conversion limit;
- ``json_too_deep``: arrays and objects nested deeper than ``max_depth`` (checked by a scan
  of the text that never recurses, before the parser sees it);
- ``json_nul``: a NUL character (U+0000) in any string or object key.

:class:`UnsafeJson` is a ``ValueError``, so callers that already treat ``ValueError`` as
"malformed" keep working. Pure: used by the service's API parser, its WebSocket consumers,
the safetensors header reader and the pod's importer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64

# The only characters that matter for nesting: brackets, and what starts, ends or escapes a
# string (a bracket inside a string does not count).
_SPECIAL = re.compile(r'[\[\]{}"\\]')


class UnsafeJson(ValueError):
    """JSON refused before use. ``code`` is stable; ``message`` is one sentence for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def nesting_depth(text: str | bytes) -> int:
    """The deepest array/object nesting of ``text``, counted without recursion.

    Works on malformed text too (it only counts brackets outside strings), so the depth limit
    holds whatever the parser would have made of the rest.
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    # One pass over the special characters only: linear whatever the input (a regex matching
    # whole strings would backtrack quadratically on an unterminated one full of escapes).
    for match in _SPECIAL.finditer(text):
        position = match.start()
        if position == escaped_at:
            continue
        char = text[position]
        if in_string:
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise UnsafeJson("json_malformed", f"{name} is not a JSON value.")


def check_value(value: Any, *, max_depth: int = MAX_DEPTH) -> Any:
    """Refuse an already-decoded value nested deeper than ``max_depth`` or holding a NUL.

    Iterative (an explicit stack), so a value too deep for recursion is still checked.
    Returns ``value`` unchanged.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise UnsafeJson("json_nul", "Text may not contain a NUL character.")
        elif isinstance(item, dict):
            if depth > max_depth:
                raise UnsafeJson("json_too_deep", f"JSON is nested deeper than {max_depth}.")
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    raise UnsafeJson("json_nul", "Text may not contain a NUL character.")
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if depth > max_depth:
                raise UnsafeJson("json_too_deep", f"JSON is nested deeper than {max_depth}.")
            stack.extend((child, depth + 1) for child in item)
    return value


# One decoder for the common call (json.loads builds one, and its scanner, per call otherwise).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(
    text: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """``json.loads`` that refuses deep nesting, NUL characters and non-standard constants.

    Raises :class:`UnsafeJson` (a ``ValueError``) with ``code`` ``json_malformed``,
    ``json_too_deep`` or ``json_nul``; never ``RecursionError``. ``object_pairs_hook`` is
    ``json.loads``'s (e.g. to refuse repeated keys); what it raises passes through.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeJson("json_malformed", "JSON must be UTF-8 text.") from None
    # Nesting is at most the number of opening brackets (those inside strings only add to it):
    # two C-speed counts spare most texts the scan.
    shallow = text.count("[") + text.count("{") <= max_depth
    if not shallow and nesting_depth(text) > max_depth:
        raise UnsafeJson("json_too_deep", f"JSON is nested deeper than {max_depth}.")
    try:
        decoder = (
            _DECODER
            if object_pairs_hook is None
            else json.JSONDecoder(
                parse_constant=_reject_constant, object_pairs_hook=object_pairs_hook
            )
        )
        value = decoder.decode(text)
    except UnsafeJson:
        raise
    except json.JSONDecodeError as exc:
        raise UnsafeJson(
            "json_malformed", f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except (ValueError, RecursionError):
        # ValueError: an integer over the int-from-string digit limit (CVE-2020-10735).
        raise UnsafeJson("json_malformed", "Not valid JSON: a number is too long.") from None
    if shallow and "\\u0000" not in text:
        # Nothing to walk: not too deep (counted above), and no NUL — json.loads refuses a raw
        # control character, so a NUL can only come from the escape \u0000.
        return value
    return check_value(value, max_depth=max_depth)
