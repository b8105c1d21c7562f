"""Flat float32 vectors of a model's state, the unit secure aggregation adds up.

Convention: the floating-point tensors of ``state_dict()`` in its order, each flattened. Integer
buffers (BatchNorm's ``num_batches_tracked``) are not part of the vector: they are counters,
kept from the global model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .build import tensor_layout
from .spec import ModelSpec


def _float_names(spec: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, shape) for n, shape, dtype, _ in tensor_layout(spec) if dtype.is_floating_point]


def vector_size(spec: ModelSpec) -> int:
    return sum(math.prod(shape) for _, shape in _float_names(spec))


def flatten_state(state: Mapping[str, torch.Tensor], spec: ModelSpec) -> npt.NDArray[np.float32]:
    parts = [
        state[n].detach().cpu().reshape(-1).to(torch.float32).numpy() for n, _ in _float_names(spec)
    ]
    return (
        np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    )


def unflatten_state(
    vector: npt.NDArray[np.float32], spec: ModelSpec, like: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flatten_state`; integer buffers are copied from ``like``."""
    if vector.shape != (vector_size(spec),):
        raise ValueError(f"expected a vector of {vector_size(spec)} values, got {vector.shape}")
    out = {name: tensor.detach().clone() for name, tensor in like.items()}
    offset = 0
    for name, shape in _float_names(spec):
        size = int(np.prod(shape))
        chunk = torch.from_numpy(np.array(vector[offset : offset + size], dtype=np.float32))
        out[name] = chunk.reshape(shape).to(like[name].dtype)
        offset += size
    return out


def vector_slices(spec: ModelSpec) -> dict[str, slice]:
    """Where each floating-point tensor of ``state_dict()`` lives in the flat vector."""
    out: dict[str, slice] = {}
    offset = 0
    for name, shape in _float_names(spec):
        size = int(np.prod(shape))
        out[name] = slice(offset, offset + size)
        offset += size
    return out


CONTROL_TENSOR = "control"


def control_bytes(control: npt.NDArray[np.floating[Any]]) -> bytes:
    """SCAFFOLD's control variate c as the service serves it: safetensors with one float32
    tensor ``control`` of the model's dimension (never pickle)."""
    from safetensors.numpy import save

    vector = np.ascontiguousarray(np.asarray(control, dtype=np.float32))
    return bytes(save({CONTROL_TENSOR: vector}))


def control_from_bytes(blob: bytes, dim: int) -> npt.NDArray[np.float32]:
    """The control variate of :func:`control_bytes`; ``ValueError`` unless it is exactly one
    finite float32 tensor of ``dim`` values."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise ValueError("not a safetensors file") from exc
    vector = tensors.get(CONTROL_TENSOR)
    if set(tensors) != {CONTROL_TENSOR} or vector is None or vector.shape != (dim,):
        raise ValueError(f"expected one tensor {CONTROL_TENSOR!r} of {dim} values")
    if vector.dtype != np.float32 or not np.all(np.isfinite(vector)):
        raise ValueError("expected finite float32 values")
    return vector
