"""Everything the service checks of a submitted spec and its weights, as one pure function.

The service calls it before storing a request; ``dataspace-provider check`` calls it offline
with a catalog file, so a provider learns before submitting exactly what the service would
refuse, with the same code and JSON path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import safejson
from .datafit import check_against_catalog
from .errors import SpecError
from .spec import ModelSpec, SpecLimits, validate_spec


def check_submission(
    spec: Any,
    weights: bytes,
    *,
    category_fields: Callable[[str], Any | None],
    limits: SpecLimits | None = None,
) -> ModelSpec:
    """The typed spec, or :class:`SpecError`. ``category_fields(slug)`` gives a catalog
    category's field list (None: no such category)."""
    from .weights import load_weights

    limits = limits or SpecLimits()
    if len(weights) > limits.max_weights_bytes:
        raise SpecError(
            "weights_too_large",
            f"The weights file is larger than the limit of {limits.max_weights_bytes} bytes.",
        )
    try:
        safejson.check_value(spec)
    except safejson.UnsafeJson as exc:
        raise SpecError(exc.code, exc.message) from None
    try:
        parsed = validate_spec(spec, limits)
    except SpecError as exc:
        # A model sized for the catalog's encoding fails shape checks without data.schema:
        # say what is missing rather than that the shapes differ.
        if exc.code == "shape_mismatch" and _lacks_schema(spec, category_fields):
            raise SpecError(
                "schema_required",
                "The spec uses categorical or date fields: it must carry the catalog's "
                "entries for its fields in data.schema (dataspace-provider check --write-spec "
                "adds them).",
                "data.schema",
            ) from None
        raise
    load_weights(weights, parsed, limits)
    fields = category_fields(parsed.data.category)
    if fields is None:
        raise SpecError(
            "unknown_category",
            f"Unknown data category {parsed.data.category!r}.",
            "data.category",
        )
    check_against_catalog(parsed, parsed.data.category, fields)
    return parsed


def _lacks_schema(spec: Any, category_fields: Callable[[str], Any | None]) -> bool:
    """Whether a spec without ``data.schema`` uses categorical or date catalog fields."""
    data = spec.get("data") if isinstance(spec, dict) else None
    if not isinstance(data, dict) or data.get("schema") is not None:
        return False
    fields = category_fields(str(data.get("category")))
    if not isinstance(fields, list):
        return False
    used = [*data.get("features", []), data.get("label")]
    return any(
        isinstance(f, dict) and f.get("name") in used and f.get("type") in ("categorical", "date")
        for f in fields
    )
