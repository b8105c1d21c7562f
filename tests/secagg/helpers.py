from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.secagg.encoding import Layout, encode_vector


def parts_for(rng: np.random.Generator, dim: int) -> dict[str, npt.NDArray[np.float64]]:
    return {
        "update": rng.uniform(-1, 1, dim),
        "weight": np.array([float(rng.integers(1, 10))]),
        "eval_loss": np.array([rng.uniform(0, 5)]),
        "eval_correct": np.array([float(rng.integers(0, 5))]),
        "eval_examples": np.array([5.0]),
    }


def quantized_sum(
    inputs: dict[int, dict[str, npt.NDArray[np.float64]]],
    survivors: list[int],
    layout: Layout,
    seed: int,
) -> npt.NDArray[np.uint32]:
    """The plain sum of the survivors' quantized inputs (same rounding draws as the pods)."""
    total = np.zeros(layout.length, dtype=np.uint32)
    for u in survivors:
        total += encode_vector(inputs[u], layout, np.random.default_rng(seed * 1000 + u))
    return total
