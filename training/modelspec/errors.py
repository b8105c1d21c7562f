"""The one error of the model-spec module, with a stable code and the JSON path at fault."""

from __future__ import annotations


class SpecError(Exception):
    """Codes: malformed_spec, unknown_field, invalid_value, unknown_layer, unknown_loss,
    unknown_optimizer, unknown_algorithm, shape_mismatch, too_many_layers, too_many_parameters,
    weights_not_safetensors, weights_truncated, weights_missing_tensor,
    weights_unexpected_tensor, weights_shape_mismatch, weights_dtype_mismatch,
    weights_not_finite, weights_too_large, unknown_language, valuation_groups_too_small."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (at {self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where}"
