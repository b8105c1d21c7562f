"""Server optimizers on the aggregate (Reddi et al. 2021, "Adaptive Federated Optimization")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def server_step(
    optimizer: Mapping[str, Any],
    current: Vector,
    average: Vector,
    state: Mapping[str, Vector] | None,
) -> tuple[Vector, dict[str, Vector] | None]:
    """Apply the aggregate: FedAvg adds the average update; FedAdam treats it as a pseudo-
    gradient with server-side first and second moments (kept between rounds)."""
    if optimizer.get("type") != "fedadam":
        return (current + average).astype(np.float32), None
    beta1, beta2 = (float(b) for b in optimizer["betas"])
    lr, eps = float(optimizer["lr"]), float(optimizer["eps"])
    m = state["m"] if state else np.zeros_like(average)
    v = state["v"] if state else np.full_like(average, eps * eps)
    m_new = beta1 * m + (1 - beta1) * average
    v_new = beta2 * v + (1 - beta2) * np.square(average)
    new = current + lr * m_new / (np.sqrt(v_new) + eps)
    return new.astype(np.float32), {"m": m_new.astype(np.float32), "v": v_new.astype(np.float32)}
