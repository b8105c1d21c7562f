"""Fixed-point encoding into Z_2^32 (two's complement), with clipping and stochastic rounding.

Each segment of the vector (the model update, the example count, the evaluation sums) has a
bound on one pod's value; its scale 2^f is the largest for which the sum over ``max_clients``
pods cannot leave the int32 range, so the aggregate never wraps (DESIGN.md section 5a). No
offset encoding: a zero update encodes to zero whatever the cohort size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..shared.numeric import l2_norm
from .errors import SecAggError

INT32_MAX = 2**31 - 1
MAX_SCALE_BITS = 24


def scale_bits(max_clients: int, bound: float) -> int:
    """Largest f ≤ 24 with max_clients · bound · 2^f < 2^31."""
    if max_clients < 1 or bound <= 0 or not math.isfinite(bound):
        raise SecAggError("Scale needs a positive client count and bound.", code="invalid_layout")
    f = math.floor(math.log2(INT32_MAX / (max_clients * bound)))
    if f < 0:
        raise SecAggError("The cohort is too large for this value bound.", code="invalid_layout")
    f = min(f, MAX_SCALE_BITS)
    while max_clients * (bound * 2**f + 1) >= 2**31:  # rounding up adds at most 1 per pod
        f -= 1
    return f


@dataclass(frozen=True)
class Segment:
    name: str
    size: int
    bound: float  # the largest absolute value one pod may contribute per coordinate
    bits: int


@dataclass(frozen=True)
class Layout:
    """Where each part lives in the masked vector and at which scale."""

    segments: tuple[Segment, ...]

    @property
    def length(self) -> int:
        return sum(s.size for s in self.segments)

    def slices(self) -> dict[str, slice]:
        out: dict[str, slice] = {}
        start = 0
        for s in self.segments:
            out[s.name] = slice(start, start + s.size)
            start += s.size
        return out

    def to_dict(self) -> dict[str, list[list[object]]]:
        return {"segments": [[s.name, s.size, s.bound, s.bits] for s in self.segments]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        return cls(
            tuple(Segment(str(n), int(z), float(b), int(f)) for n, z, b, f in data["segments"])
        )

    @classmethod
    def for_training(
        cls,
        *,
        model_dim: int,
        max_clients: int,
        clip_norm: float,
        max_weight: int = 1,
        max_eval_examples: int = 10_000,
        max_loss_per_example: float = 100.0,
        control_dim: int = 0,
        control_clip: float = 100.0,
        max_local_steps: float = 0.0,
    ) -> Layout:
        """Model update (each pod sends weight · update, weight ≤ max_weight, |coord| ≤ C),
        then the example weight, eval loss sum, correct count and eval example count.

        Optional parts, appended after those so that the layout (and every byte of the masked
        vector) is unchanged when they are off:

        * ``control_delta`` (``control_dim`` > 0): SCAFFOLD's Δc_i, L2-clipped to
          ``control_clip`` by the pod, so the server learns only Σ Δc_i (Karimireddy et al.
          2020). It doubles the upload when ``control_dim`` is the model dimension.
        * ``local_steps`` (``max_local_steps`` > 0): FedNova's weight · ‖a_i‖₁, the pod's
          (weighted) effective number of local steps, at most ``max_weight · max_local_steps``
          (Wang et al. 2020); one coordinate.
        """

        def seg(name: str, size: int, bound: float) -> Segment:
            return Segment(name, size, bound, scale_bits(max_clients, bound))

        segments = [
            seg("update", model_dim, clip_norm * max_weight),
            seg("weight", 1, float(max_weight)),
            seg("eval_loss", 1, max_loss_per_example * max_eval_examples),
            seg("eval_correct", 1, float(max_eval_examples)),
            seg("eval_examples", 1, float(max_eval_examples)),
        ]
        if control_dim < 0 or max_local_steps < 0:
            raise SecAggError("Optional parts need non-negative sizes.", code="invalid_layout")
        if control_dim:
            segments.append(seg("control_delta", control_dim, control_clip))
        if max_local_steps:
            segments.append(seg("local_steps", 1, float(max_local_steps) * max_weight))
        return cls(tuple(segments))

    def with_parts(self, parts: Sequence[tuple[str, int, float]], max_clients: int) -> Layout:
        """This layout with more named parts (name, size, bound on one pod's value) after its
        own; a pod's contribution carries every part by name."""
        extra = tuple(Segment(n, z, b, scale_bits(max_clients, b)) for n, z, b in parts)
        if len({s.name for s in self.segments + extra}) != len(self.segments) + len(extra):
            raise SecAggError("Part names must be unique.", code="invalid_layout")
        return Layout(self.segments + extra)


def clip_l2(vector: npt.NDArray[np.float32], max_norm: float) -> npt.NDArray[np.float32]:
    norm = l2_norm(vector)
    if norm <= max_norm or norm == 0.0:
        return vector.astype(np.float32, copy=True)
    return (vector * np.float32(max_norm / norm)).astype(np.float32)


ENCODE_CHUNK = 1 << 14  # coordinates per step: the float64 work buffer (128 KiB) stays in L2


def _as_float(values: Any) -> npt.NDArray[Any]:
    """The values as a flat array that casts safely to float64, without copying float32 or
    float64 input."""
    array = np.asarray(values).reshape(-1)
    if not np.can_cast(array.dtype, np.float64, "safe"):
        array = np.asarray(array, dtype=np.float64)
    return array


def encode_into(
    values: npt.NDArray[Any],
    segment: Segment,
    rng: np.random.Generator,
    out: npt.NDArray[np.uint32],
) -> None:
    """Clamp to the segment bound, scale by 2^f, round stochastically (unbiased), wrap to uint32,
    writing into ``out``. Works in float64 (x · 2^f needs more than float32's 24 bits to keep
    the fraction the rounding draws against), one L2-sized chunk at a time so each step reads
    its input from cache; the draws are one uniform float32 per coordinate, in order, whatever
    the chunking (a generator's stream does not depend on how it is asked)."""
    length = len(out)
    if len(values) != length:
        raise SecAggError(f"Segment {segment.name} has the wrong size.", code="invalid_input")
    chunk = min(ENCODE_CHUNK, max(1, length))
    work = np.empty(chunk, dtype=np.float64)
    draws = np.empty(chunk, dtype=np.float32)
    scale = float(2**segment.bits)
    signed = out.view(np.int32)
    for start in range(0, length, chunk):
        size = min(chunk, length - start)
        x, u = work[:size], draws[:size]
        np.copyto(x, values[start : start + size], casting="safe")
        np.clip(x, -segment.bound, segment.bound, out=x)
        x *= scale
        # floor(x + u), u ~ U[0, 1): rounds up with probability frac(x), so E[q] = x.
        rng.random(size, dtype=np.float32, out=u)
        x += u
        np.floor(x, out=x)
        # |q| < 2^31 by the choice of scale, so int32 holds it; its bits are the uint32 encoding.
        np.copyto(signed[start : start + size], x, casting="unsafe")


def encode(
    values: npt.NDArray[np.floating], segment: Segment, rng: np.random.Generator
) -> npt.NDArray[np.uint32]:
    flat = _as_float(values)
    out = np.empty(len(flat), dtype=np.uint32)
    encode_into(flat, segment, rng, out)
    return out


def encode_vector(
    parts: dict[str, npt.NDArray[np.floating]], layout: Layout, rng: np.random.Generator
) -> npt.NDArray[np.uint32]:
    out = np.empty(layout.length, dtype=np.uint32)
    for segment, where in zip(layout.segments, layout.slices().values(), strict=True):
        encode_into(_as_float(parts[segment.name]), segment, rng, out[where])
    return out


def decode(total: npt.NDArray[np.uint32], layout: Layout) -> dict[str, npt.NDArray[np.float64]]:
    """Decode an aggregate: reinterpret as int32 and divide by each segment's scale."""
    signed = total.view(np.int32).astype(np.float64)
    return {
        s.name: signed[where] / float(2**s.bits)
        for s, where in zip(layout.segments, layout.slices().values(), strict=True)
    }
