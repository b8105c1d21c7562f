"""Server-side optimizers on the decoded aggregate (FedAvg, FedAdam — Reddi et al. 2021)."""

from __future__ import annotations

import numpy as np

from training.modelspec.server_optim import server_step


def test_fedavg_adds_the_average_update_and_keeps_no_state() -> None:
    current = np.array([1.0, -2.0, 0.5], np.float32)
    average = np.array([0.1, 0.2, -0.3], np.float32)
    new, state = server_step({"type": "fedavg"}, current, average, None)
    assert np.allclose(new, current + average) and state is None


def test_fedadam_moves_each_coordinate_by_about_lr_and_carries_its_moments() -> None:
    optimizer = {"type": "fedadam", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-3}
    current = np.zeros(4, np.float32)
    average = np.array([1.0, -1.0, 1e-2, 0.0], np.float32)
    new, state = server_step(optimizer, current, average, None)
    assert state is not None
    m, v = state["m"], state["v"]
    assert np.allclose(m, 0.1 * average)
    assert np.allclose(v, 1e-6 * 0.99 + 0.01 * average**2)
    # Adaptive: a large and a small coordinate of the same sign move by comparable steps.
    assert new[0] > 0 and new[1] < 0 and new[3] == 0
    assert abs(new[0]) < 0.02 and abs(new[2]) > abs(new[0]) / 10
    # The moments carry over: the same pseudo-gradient again pushes further in its direction.
    newer, _ = server_step(optimizer, new, average, state)
    assert newer[0] > new[0] and newer[1] < new[1]
