from __future__ import annotations

import numpy as np
from opacus.accountants import RDPAccountant

from training.secagg.dp import epsilon, next_round_fits, noise_std_per_pod, privatize


def test_noise_of_the_sum_matches_the_calibration() -> None:
    # t pods each add N(0, σ²C²/t): their sum carries N(0, σ²C²).
    clip, sigma, t, dim = 2.0, 1.5, 16, 20_000
    rng = np.random.default_rng(7)
    total = sum(
        privatize(
            np.zeros(dim, np.float32),
            clip_norm=clip,
            noise_multiplier=sigma,
            min_survivors=t,
            rng=rng,
        )
        for _ in range(t)
    )
    assert abs(float(np.std(total)) - sigma * clip) / (sigma * clip) < 0.02
    assert noise_std_per_pod(clip, sigma, t) == sigma * clip / 4


def test_clipping_bounds_each_pods_influence() -> None:
    update = np.full(100, 10.0, dtype=np.float32)
    noisy = privatize(update, clip_norm=1.0, noise_multiplier=0.0, min_survivors=10)
    assert abs(np.linalg.norm(noisy) - 1.0) < 1e-5


def test_accountant_matches_opacus() -> None:
    for sigma, q, steps, delta in [
        (1.0, 0.25, 10, 1e-5),
        (0.8, 0.05, 100, 1e-6),
        (2.0, 1.0, 5, 1e-5),
    ]:
        reference = RDPAccountant()
        for _ in range(steps):
            reference.step(noise_multiplier=sigma, sample_rate=q)
        assert abs(epsilon(sigma, q, steps, delta) - reference.get_epsilon(delta)) < 1e-9


def test_budget_check_stops_before_exceeding() -> None:
    rounds = 0
    while next_round_fits(
        noise_multiplier=1.0, sample_rate=0.25, rounds_done=rounds, delta=1e-5, target_epsilon=8.0
    ):
        rounds += 1
    assert epsilon(1.0, 0.25, rounds, 1e-5) <= 8.0 < epsilon(1.0, 0.25, rounds + 1, 1e-5)
    assert epsilon(1.0, 1.0, 10, 1e-5) > 5 * epsilon(1.0, 0.1, 10, 1e-5)  # subsampling matters
