"""Declarative model specs: validation, torch modules, safetensors weights, flat vectors.

Pure (no Django). Nothing a provider sends is executed: a spec names allow-listed layers and
their arguments; weights are parsed as safetensors and checked tensor by tensor. The torch-using
parts are imported lazily so that validating a spec stays light for the pod.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .layers import LayerSpec
from .spec import (
    DataSpec,
    DPSpec,
    ModelSpec,
    OptimizerSpec,
    PrivacySpec,
    SpecLimits,
    TrainingSpec,
    validate_spec,
)
from .texts import LANGUAGES, ProviderTexts, provider_texts

if TYPE_CHECKING:
    from .build import build_module, count_parameters, expected_tensors, spec_from_sequential
    from .vectors import flatten_state, unflatten_state, vector_size
    from .weights import dump_weights, load_weights, sha256_hex

_LAZY = {
    "build_module": "build",
    "count_parameters": "build",
    "expected_tensors": "build",
    "spec_from_sequential": "build",
    "flatten_state": "vectors",
    "unflatten_state": "vectors",
    "vector_size": "vectors",
    "dump_weights": "weights",
    "load_weights": "weights",
    "sha256_hex": "weights",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = [
    "LANGUAGES",
    "DPSpec",
    "DataSpec",
    "LayerSpec",
    "ModelSpec",
    "OptimizerSpec",
    "PrivacySpec",
    "ProviderTexts",
    "SpecError",
    "SpecLimits",
    "TrainingSpec",
    "build_module",
    "count_parameters",
    "dump_weights",
    "expected_tensors",
    "flatten_state",
    "load_weights",
    "provider_texts",
    "sha256_hex",
    "spec_from_sequential",
    "unflatten_state",
    "validate_spec",
    "vector_size",
]
