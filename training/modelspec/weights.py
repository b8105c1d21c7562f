"""Weights travel as safetensors only: parsed and checked here before anything uses them.

The header is read by hand first (8-byte little-endian length, a JSON object, offsets inside
the buffer) so pickles, zip archives, random bytes and truncated files get precise errors
before any tensor is materialised. Never pickle, never ``torch.load``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import safejson
from .build import expected_tensors
from .errors import SpecError
from .spec import ModelSpec, SpecLimits

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
MAX_HEADER = 100 * 1024 * 1024
HEADER_MAX_DEPTH = 8


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _not_safetensors(what: str) -> SpecError:
    return SpecError("weights_not_safetensors", f"The weights are not a safetensors file ({what}).")


def _header(data: bytes) -> dict[str, Any]:
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise _not_safetensors("a pickle")
    if data[:4] == b"PK\x03\x04":
        raise _not_safetensors("a zip archive, as torch.save writes")
    if len(data) < 8:
        raise SpecError("weights_truncated", "The weights file is truncated.")
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_HEADER:
        raise _not_safetensors("no valid header")
    if 8 + length > len(data):
        raise SpecError("weights_truncated", "The weights file is truncated (header).")
    raw = data[8 : 8 + length]
    if not raw.lstrip().startswith(b"{"):
        raise _not_safetensors("no valid header")
    try:
        # Nested three deep at most ({name: {shape: [...]}}): deeper is not safetensors.
        header = safejson.loads(raw, max_depth=HEADER_MAX_DEPTH)
    except safejson.UnsafeJson as exc:
        if exc.code == "json_too_deep":
            raise _not_safetensors("the header is nested too deeply") from None
        if exc.code == "json_nul":
            raise _not_safetensors("the header holds a NUL character") from None
        raise _not_safetensors("the header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors("the header is not an object")
    body = len(data) - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if (
            not isinstance(entry, dict)
            or entry.get("dtype") not in DTYPES
            or not isinstance(entry.get("shape"), list)
            or not all(isinstance(d, int) and d >= 0 for d in entry["shape"])
            or not isinstance(entry.get("data_offsets"), list)
            or len(entry["data_offsets"]) != 2
        ):
            raise _not_safetensors(f"bad entry for {name[:60]!r}")
        start, end = entry["data_offsets"]
        numel = 1
        for d in entry["shape"]:
            numel *= d
        if (
            not (isinstance(start, int) and isinstance(end, int))
            or end - start != numel * SIZES[entry["dtype"]]
        ):
            raise _not_safetensors(f"inconsistent offsets for {name[:60]!r}")
        if end > body:
            raise SpecError("weights_truncated", "The weights file is truncated (tensor data).")
    return header


def load_weights(
    data: bytes, spec: ModelSpec, limits: SpecLimits | None = None
) -> dict[str, torch.Tensor]:
    """Parse and check safetensors weights against the spec: names, shapes, dtypes, finiteness."""
    limits = limits or SpecLimits()
    if len(data) > limits.max_weights_bytes:
        raise SpecError(
            "weights_too_large",
            f"The weights file is larger than {limits.max_weights_bytes} bytes.",
        )
    header = _header(data)
    expected = expected_tensors(spec)
    present = {k for k in header if k != "__metadata__"}
    missing = sorted(set(expected) - present)
    if missing:
        raise SpecError(
            "weights_missing_tensor", f"The weights lack tensor {missing[0]!r}.", missing[0]
        )
    unexpected = sorted(present - set(expected))
    if unexpected:
        raise SpecError(
            "weights_unexpected_tensor",
            f"The weights hold an unexpected tensor {unexpected[0][:60]!r}.",
        )
    for name, (shape, dtype) in expected.items():
        entry = header[name]
        if DTYPES[entry["dtype"]] != dtype:
            raise SpecError(
                "weights_dtype_mismatch",
                f"Tensor {name!r} is {entry['dtype']}, "
                f"expected {str(dtype).removeprefix('torch.')}.",
                name,
            )
        if tuple(entry["shape"]) != shape:
            raise SpecError(
                "weights_shape_mismatch",
                f"Tensor {name!r} has shape {entry['shape']}, expected {list(shape)}.",
                name,
            )
    try:
        tensors = st_load(data)
    except Exception:
        raise _not_safetensors("unreadable") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SpecError("weights_not_finite", f"Tensor {name!r} holds NaN or infinity.", name)
    return {name: tensors[name] for name in expected}


def dump_weights(state: Mapping[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of a state dict (CPU, contiguous, deterministic order)."""
    clean = {name: state[name].detach().cpu().contiguous() for name in sorted(state)}
    return bytes(st_save(clean))
