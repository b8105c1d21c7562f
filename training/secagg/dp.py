"""Distributed differential privacy (user-level), DESIGN.md section 6.

Each pod clips its update to L2 norm C and adds Gaussian noise N(0, σ²C²/t), t being the minimum
number of survivors that lets a round publish: the revealed sum then carries noise of standard
deviation at least σC, the Gaussian mechanism's calibration for sensitivity C. Privacy over rounds
is accounted with Opacus's RDP accountant, with sampling rate q = cohort / pool.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
import numpy.typing as npt

from .encoding import clip_l2


def noise_std_per_pod(clip_norm: float, noise_multiplier: float, min_survivors: int) -> float:
    return noise_multiplier * clip_norm / math.sqrt(max(1, min_survivors))


def privatize(
    update: npt.NDArray[np.float32],
    *,
    clip_norm: float,
    noise_multiplier: float,
    min_survivors: int,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.float32]:
    """Clip, then add this pod's share of the Gaussian noise (a freshly, securely seeded RNG)."""
    rng = rng or np.random.default_rng(secrets.randbits(128))
    clipped = clip_l2(update, clip_norm)
    std = noise_std_per_pod(clip_norm, noise_multiplier, min_survivors)
    return (clipped + rng.normal(0.0, std, size=clipped.shape)).astype(np.float32)


def _rdp_accountant() -> Any:
    # Here, not at the top: opacus loads its whole privacy engine on import (about 2 s of CPU),
    # which a pod starting up, or a round without DP, does not need.
    from opacus.accountants import RDPAccountant

    return RDPAccountant()


def epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """ε after ``rounds`` rounds of the subsampled Gaussian mechanism (RDP, Mironov et al.)."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    accountant = _rdp_accountant()
    accountant.history = [(noise_multiplier, min(1.0, sample_rate), rounds)]
    return float(accountant.get_epsilon(delta=delta))


def next_round_fits(
    *,
    noise_multiplier: float,
    sample_rate: float,
    rounds_done: int,
    delta: float,
    target_epsilon: float,
) -> bool:
    """Whether one more round keeps the total within the budget (checked before each round)."""
    return epsilon(noise_multiplier, sample_rate, rounds_done + 1, delta) <= target_epsilon


def epsilon_of(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε of a sequence of (noise multiplier, sample rate, rounds) entries, composed in RDP."""
    steps = [(s, min(1.0, q), n) for s, q, n in history if n > 0]
    if not steps:
        return 0.0
    if any(s <= 0 for s, _, _ in steps):
        return math.inf
    accountant = _rdp_accountant()
    accountant.history = steps
    return float(accountant.get_epsilon(delta=delta))
