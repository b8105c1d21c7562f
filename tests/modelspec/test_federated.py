"""Local-work budgets, SCAFFOLD's corrected steps and control variates, FedNova's parts."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from dataspace.demo import demo_request_spec, demo_weights
from training.modelspec import load_weights, validate_spec, vector_size
from training.modelspec.federated import (
    average_update,
    federated_parts,
    fednova_norm,
    max_local_steps,
)
from training.modelspec.trainer import EvalResult, LocalResult, train_local
from training.modelspec.vectors import vector_slices

X = np.random.default_rng(0).normal(size=(40, 30)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def spec_with(**training: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    raw = demo_request_spec()
    raw = copy.deepcopy(raw)
    raw["training"].update(training)
    spec = validate_spec(raw)
    return spec, load_weights(demo_weights(raw, seed=1), spec)


def test_without_a_budget_every_epoch_runs_and_steps_are_counted() -> None:
    spec, state = spec_with(local_epochs=3, batch_size=8)
    result = train_local(spec, state, X, Y, seed=0)
    assert result.num_examples == 32 and result.steps == 3 * 4
    assert result.control_delta is None and result.control is None


def test_the_tighter_of_spec_and_device_budget_stops_training() -> None:
    spec, state = spec_with(local_epochs=10, batch_size=8, local_steps=7)
    assert train_local(spec, state, X, Y, seed=0).steps == 7
    short = train_local(spec, state, X, Y, seed=0, max_steps=2)
    assert short.steps == 2
    # The first two steps are the same whatever the budget: a slow pod does a prefix of the work.
    spec2, _ = spec_with(local_epochs=10, batch_size=8, local_steps=2)
    assert np.array_equal(short.update, train_local(spec2, state, X, Y, seed=0).update)


def test_a_seconds_budget_uses_the_injected_clock() -> None:
    spec, state = spec_with(local_epochs=10, batch_size=8, local_seconds=5.0)
    ticks = iter(float(t) for t in range(1000))  # one "second" per look at the clock
    result = train_local(spec, state, X, Y, seed=0, clock=lambda: next(ticks))
    # started at 0; checks at 1, 2, 3, 4 allow a step each; the check at 5 stops.
    assert result.steps == 4
    ticks = iter(float(t) for t in range(1000))
    device = train_local(spec, state, X, Y, seed=0, clock=lambda: next(ticks), max_seconds=2.0)
    assert device.steps == 1


def test_scaffold_with_zero_controls_is_fedavg_and_reports_its_gradient_estimate() -> None:
    plain_spec, state = spec_with(local_epochs=2, batch_size=8)
    spec, _ = spec_with(local_epochs=2, batch_size=8, algorithm={"type": "scaffold"})
    plain = train_local(plain_spec, state, X, Y, seed=4)
    result = train_local(spec, state, X, Y, seed=4)
    assert np.array_equal(plain.update, result.update)
    assert result.control_delta is not None and result.control is not None
    # Option II with c = c_i = 0: Δc_i = (x − y_i) / (K η) = −update / (8 · 0.05)
    assert np.allclose(result.control_delta, -plain.update / (8 * 0.05), atol=1e-5)
    assert np.array_equal(result.control, result.control_delta)


def test_scaffold_corrects_each_step_by_c_minus_c_i() -> None:
    # One full-batch step: y = x − η (g(x) + c − c_i) exactly, whatever the model.
    plain_spec, state = spec_with(local_epochs=1, batch_size=64)
    spec, _ = spec_with(local_epochs=1, batch_size=64, algorithm={"type": "scaffold"})
    dim = vector_size(spec)
    rng = np.random.default_rng(2)
    c = rng.normal(size=dim).astype(np.float32) * 0.1
    c_i = rng.normal(size=dim).astype(np.float32) * 0.1
    plain = train_local(plain_spec, state, X, Y, seed=4)
    result = train_local(spec, state, X, Y, seed=4, server_control=c, client_control=c_i)
    assert result.steps == 1
    assert np.allclose(result.update, plain.update - 0.05 * (c - c_i), atol=1e-6)
    # c_i+ = c_i − c + (x − y)/η = c_i − c + g + c − c_i = g, the full-batch gradient at x.
    assert result.control is not None
    assert np.allclose(result.control, -plain.update / 0.05, atol=1e-4)
    with pytest.raises(ValueError, match="control variates"):
        train_local(spec, state, X, Y, seed=4, server_control=c[:3])


def test_scaffold_control_delta_is_clipped_and_the_pod_keeps_the_clipped_one() -> None:
    spec, state = spec_with(algorithm={"type": "scaffold", "control_clip": 0.01})
    c_i = np.full(vector_size(spec), 0.5, np.float32)
    result = train_local(spec, state, X, Y, seed=1, client_control=c_i)
    assert result.control_delta is not None and result.control is not None
    assert np.linalg.norm(result.control_delta) <= 0.01 * (1 + 1e-5)
    assert np.allclose(result.control, c_i + result.control_delta)


def test_scaffold_leaves_buffers_alone() -> None:
    raw = copy.deepcopy(demo_request_spec())
    raw["model"]["layers"].insert(1, {"type": "batchnorm1d", "num_features": 16})
    raw["training"]["algorithm"] = {"type": "scaffold"}
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    result = train_local(spec, state, X, Y, seed=0)
    assert result.control_delta is not None
    where = vector_slices(spec)
    assert not result.control_delta[where["1.running_mean"]].any()
    assert not result.control_delta[where["1.running_var"]].any()
    assert result.control_delta[where["1.weight"]].any()


def test_fednova_norm_by_hand() -> None:
    assert fednova_norm(0) == 0.0 and fednova_norm(7) == 7.0
    # τ = 2, ρ = 0.5: a = [1 − 0.25, 1 − 0.5] / 0.5 = [1.5, 1]
    assert fednova_norm(2, 0.5) == pytest.approx(2.5)


def _result(update: list[float], steps: int) -> LocalResult:
    return LocalResult(
        update=np.array(update, np.float32),
        num_examples=10,
        evaluation=EvalResult(0.0, 0, 0),
        state={},
        steps=steps,
    )


def test_fednova_parts_and_server_average_by_hand() -> None:
    spec, _ = spec_with(algorithm={"type": "fednova"})
    fast = federated_parts(spec, _result([4.0, 8.0], 4), weight=1.0, clip_norm=100.0)
    slow = federated_parts(spec, _result([1.0, -1.0], 1), weight=3.0, clip_norm=100.0)
    assert np.allclose(fast["update"], [1, 2]) and np.allclose(fast["local_steps"], [4])
    assert np.allclose(slow["update"], [3, -3]) and np.allclose(slow["local_steps"], [3])
    totals = {k: fast[k] + slow[k] for k in fast}
    # τ_eff = 7/4, Σ p d = ([1, 2] + 3 [1, −1]) / 4 = [1, −0.25]; Δ = [1.75, −0.4375]
    assert np.allclose(average_update(spec, totals), [1.75, -0.4375])
    # FedAvg would have been ([4, 8] + 3 [1, −1]) / 4: pulled toward the fast pod's direction.
    plain_spec, _ = spec_with()
    plain = {
        k: federated_parts(plain_spec, _result(u, s), weight=w, clip_norm=100.0)
        for k, (u, s, w) in {"a": ([4.0, 8.0], 4, 1.0), "b": ([1.0, -1.0], 1, 3.0)}.items()
    }
    totals = {k: plain["a"][k] + plain["b"][k] for k in plain["a"]}
    assert set(totals) == {"update", "weight"}
    assert np.allclose(average_update(plain_spec, totals), [1.75, 1.25])


def test_fednova_pod_without_a_step_adds_no_weight() -> None:
    spec, _ = spec_with(algorithm={"type": "fednova"})
    parts = federated_parts(spec, _result([0.0, 0.0], 0), weight=1.0, clip_norm=1.0)
    assert parts["weight"][0] == 0 and parts["local_steps"][0] == 0 and not parts["update"].any()


def test_fednova_parts_stay_inside_the_clip_bound() -> None:
    spec, _ = spec_with(algorithm={"type": "fednova"})
    parts = federated_parts(spec, _result([30.0, 40.0], 2), weight=1.0, clip_norm=5.0)
    assert np.allclose(parts["update"], [1.5, 2.0])  # clip to norm 5, then / 2 steps
    assert max_local_steps(spec, 1000) == 1 * 32  # one epoch of ⌈1000 / 32⌉ batches


def test_scaffold_parts_carry_the_control_delta() -> None:
    spec, state = spec_with(algorithm={"type": "scaffold"})
    result = train_local(spec, state, X, Y, seed=0)
    parts = federated_parts(spec, result, weight=0.5, clip_norm=1e6)
    assert result.control_delta is not None
    assert np.array_equal(parts["control_delta"], result.control_delta.astype(np.float64))
    assert np.allclose(parts["update"], 0.5 * result.update)
    with pytest.raises(ValueError, match="control"):
        federated_parts(spec, _result([1.0], 1), weight=1.0, clip_norm=1.0)
