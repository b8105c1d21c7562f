"""Server optimizers (Reddi et al. 2021, Algorithm 2), SCAFFOLD's server control variate and
FedNova's rescaling, each against a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.modelspec.server_optim import (
    fednova_average,
    scaffold_server_control,
    server_step,
    with_defaults,
)


def vec(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def test_fedavg_adds_the_average_and_a_server_lr_scales_it() -> None:
    new, state = server_step({"type": "fedavg"}, vec(1, -2), vec(0.5, 0.25), None)
    assert np.array_equal(new, vec(1.5, -1.75)) and state is None
    new, _ = server_step({"type": "fedavg", "lr": 2.0}, vec(1, -2), vec(0.5, 0.25), None)
    assert np.array_equal(new, vec(2.0, -1.5))


def test_fedavgm_accumulates_velocity() -> None:
    opt = {"type": "fedavgm", "lr": 1.0, "momentum": 0.9}
    x1, s1 = server_step(opt, vec(0, 0), vec(1, -2), None)
    assert np.allclose(x1, [1, -2]) and s1 is not None and np.allclose(s1["v"], [1, -2])
    # v = 0.9·[1, −2] + [1, 0] = [1.9, −1.8]; x = [1, −2] + v
    x2, s2 = server_step(opt, x1, vec(1, 0), s1)
    assert s2 is not None
    assert np.allclose(s2["v"], [1.9, -1.8]) and np.allclose(x2, [2.9, -3.8])
    # lr scales the step, not the velocity
    x3, s3 = server_step({**opt, "lr": 0.5}, x1, vec(1, 0), s1)
    assert s3 is not None and np.allclose(s3["v"], [1.9, -1.8]) and np.allclose(x3, [1.95, -2.9])


# τ = 0.75 so that v₋₁ = τ² = 0.5625 and with Δ = [1, 0] the square roots come out round.
ADAPTIVE = {"lr": 0.1, "betas": [0.5, 0.5625], "eps": 0.75}


def test_fedadagrad_sums_squares() -> None:
    opt = {"type": "fedadagrad", **ADAPTIVE}
    x, s = server_step(opt, vec(0, 0), vec(1, 0), None)
    assert s is not None
    assert np.allclose(s["m"], [0.5, 0]) and np.allclose(s["v"], [1.5625, 0.5625])
    # √v = [1.25, 0.75]: x = 0.1 · 0.5 / (1.25 + 0.75) = 0.025
    assert np.allclose(x, [0.025, 0.0])
    x2, s2 = server_step(opt, x, vec(1, 0), s)
    assert s2 is not None
    assert np.allclose(s2["m"], [0.75, 0]) and np.allclose(s2["v"], [2.5625, 0.5625])
    assert np.allclose(x2, [0.025 + 0.1 * 0.75 / (np.sqrt(2.5625) + 0.75), 0.0])


def test_fedyogi_moves_v_additively_toward_the_square() -> None:
    opt = {"type": "fedyogi", **ADAPTIVE}
    x, s = server_step(opt, vec(0, 0), vec(1, 0), None)
    assert s is not None
    # v − Δ² < 0 on the first coordinate: v = 0.5625 + 0.4375 · 1 = 1; the second stays at τ².
    assert np.allclose(s["v"], [1.0, 0.5625])
    assert np.allclose(x, [0.1 * 0.5 / (1.0 + 0.75), 0.0])  # = 1/35
    # Now Δ² = 0.25 < v = 1: v shrinks by (1 − β₂)Δ² = 0.109375, whereas Adam's would by ×β₂.
    x2, s2 = server_step(opt, x, vec(0.5, 0), s)
    assert s2 is not None
    assert np.allclose(s2["m"], [0.5, 0]) and np.allclose(s2["v"], [0.890625, 0.5625])
    assert np.allclose(x2, x + vec(0.1 * 0.5 / (np.sqrt(0.890625) + 0.75), 0))


def test_fedadam_averages_squares_exponentially() -> None:
    opt = {"type": "fedadam", **ADAPTIVE}
    x, s = server_step(opt, vec(0, 0), vec(1, 0), None)
    assert s is not None
    # v = 0.5625 · 0.5625 + 0.4375 · 1 = 0.75390625
    assert np.allclose(s["v"], [0.75390625, 0.31640625])
    assert np.allclose(x, [0.05 / (np.sqrt(0.75390625) + 0.75), 0.0])


def test_the_three_adaptive_optimizers_differ_only_in_v() -> None:
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=6).astype(np.float32)
    deltas = [rng.normal(size=6).astype(np.float32) for _ in range(3)]
    ms = []
    for kind in ("fedadam", "fedyogi", "fedadagrad"):
        x, state = x0, None
        for d in deltas:
            x, state = server_step({"type": kind, **ADAPTIVE}, x, d, state)
        assert state is not None
        ms.append(state["m"])
    assert np.allclose(ms[0], ms[1]) and np.allclose(ms[1], ms[2])


def test_defaults_fill_missing_hyper_parameters() -> None:
    assert with_defaults({"type": "fedyogi"})["eps"] == 1e-3
    assert with_defaults({"type": "fedavgm", "lr": 0.3}) == {
        "type": "fedavgm",
        "lr": 0.3,
        "momentum": 0.9,
    }
    with pytest.raises(ValueError, match="unknown"):
        with_defaults({"type": "sgd"})


def test_scaffold_server_control_adds_the_sum_over_the_population() -> None:
    c = scaffold_server_control(None, vec(2, -4), population=4)
    assert np.allclose(c, [0.5, -1.0])
    c = scaffold_server_control(c, vec(1, 1), population=4)
    assert np.allclose(c, [0.75, -0.75])
    with pytest.raises(ValueError, match="population"):
        scaffold_server_control(c, vec(1, 1), population=0)


def test_fednova_rescales_by_the_weighted_mean_step_count() -> None:
    # Two pods, weights 1 and 3, 4 and 1 local steps, raw updates [4, 8] and [1, −1].
    # d₁ = [1, 2], d₂ = [1, −1]; sums: Σ w d = [4, −1], Σ w τ = 7, W = 4.
    # τ_eff = 7/4; Σ p d = [1, −0.25]; Δ = [1.75, −0.4375].
    average = fednova_average(vec(4, -1), weight_total=4.0, steps_total=7.0)
    assert np.allclose(average, [1.75, -0.4375])
    # With equal step counts it is plain weighted FedAvg: (1·[4, 8] + 3·[4, −4]) / 4
    same = fednova_average(vec(1 * 1 + 3 * 1, 1 * 2 - 3 * 1), weight_total=4.0, steps_total=16.0)
    assert np.allclose(same, (1 * vec(4, 8) + 3 * vec(4, -4)) / 4)
    with pytest.raises(ValueError, match="weight"):
        fednova_average(vec(1), weight_total=0.0, steps_total=1.0)
