"""The model-card fields a provider states in its spec (Mitchell et al. 2019, "Model Cards for
Model Reporting", section 4.2): what the model is for, and what it must not be used for.

Both are required at submission: they are part of the plan people consent to (the plan hash
covers the spec), the notice shows them, and the signed model card repeats them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SpecError

FIELDS = ("intended_use", "out_of_scope_uses")
MAX_INTENDED_USE = 2000
MAX_OUT_OF_SCOPE = 20
MAX_OUT_OF_SCOPE_LEN = 500


@dataclass(frozen=True)
class CardFields:
    intended_use: str
    out_of_scope_uses: tuple[str, ...]


def _text(value: Any, path: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise SpecError("invalid_value", f"Must be a text of 1 to {max_len} characters.", path)
    return value


def card_fields(raw: Mapping[str, Any]) -> CardFields:
    """Read and check ``intended_use`` (a text) and ``out_of_scope_uses`` (1 to 20 texts)."""
    for key in FIELDS:
        if key not in raw:
            raise SpecError("invalid_value", f"Missing required field {key!r}.", key)
    uses = raw["out_of_scope_uses"]
    if not isinstance(uses, list) or not 1 <= len(uses) <= MAX_OUT_OF_SCOPE:
        raise SpecError(
            "invalid_value",
            f"Must be a list of 1 to {MAX_OUT_OF_SCOPE} texts.",
            "out_of_scope_uses",
        )
    return CardFields(
        intended_use=_text(raw["intended_use"], "intended_use", MAX_INTENDED_USE),
        out_of_scope_uses=tuple(
            _text(u, f"out_of_scope_uses[{i}]", MAX_OUT_OF_SCOPE_LEN) for i, u in enumerate(uses)
        ),
    )
