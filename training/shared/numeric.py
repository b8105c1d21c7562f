"""Numeric helpers both cores use on model-sized vectors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt


def l2_norm(vector: npt.NDArray[np.floating[Any]]) -> float:
    """‖v‖₂ summed in float64 on one thread. ``np.linalg.norm`` calls BLAS ``dot``, which for a
    model-sized vector wakes OpenBLAS's worker threads: twice the CPU for the same wall time,
    and far worse on a busy machine, where they spin waiting for a core."""
    return math.sqrt(float(np.square(np.asarray(vector).reshape(-1), dtype=np.float64).sum()))
