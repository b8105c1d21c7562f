"""The API's one JSON parser: every JSON body goes through :mod:`training.modelspec.safejson`.

DRF's own ``JSONParser`` lets ``RecursionError`` out of ``json.loads`` (a 500 for a few
kilobytes of ``[``) and hands NUL characters on to PostgreSQL (another 500, sometimes after
other writes). Here both are a 400 with a stable code before any view sees the body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.parsers import JSONParser

from training.modelspec import safejson

if TYPE_CHECKING:
    from dataspace.errors import DomainError


def unsafe_json_error(exc: safejson.UnsafeJson, field: str | None = None) -> DomainError:
    """The API error for refused JSON (``json_malformed``, ``json_too_deep``, ``json_nul``)."""
    # Imported here: dataspace.errors imports rest_framework.views, which loads this module.
    from dataspace.errors import DomainError

    return DomainError(exc.message, code=exc.code, fields={field: [exc.message]} if field else None)


class StrictJSONParser(JSONParser):
    """``application/json`` bodies, refused with a 400 when malformed, too deep or holding NUL."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if not raw:
            # DRF reads an empty body as "no data"; keep that.
            return {}
        try:
            return safejson.loads(raw)
        except safejson.UnsafeJson as exc:
            raise unsafe_json_error(exc) from None
