"""The per-process caches of model building: tensor layouts by architecture, and modules reused
across rounds. A reused module must give exactly what a fresh one gives, and an entry made for
one spec must never serve another."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from dataspace.demo import demo_request_spec, demo_weights
from training.modelspec import build, load_weights, validate_spec
from training.modelspec.build import (
    architecture_key,
    build_module,
    expected_tensors,
    loaded_module,
    tensor_layout,
)
from training.modelspec.explain import IG_STEPS, _baseline, _logits, explanation_sums
from training.modelspec.trainer import LocalResult, train_local
from training.modelspec.vectors import vector_size
from training.shared.numeric import l2_norm

FEATURES = 30


def stateful_spec(*, hidden: int = 12, mean: float = 0.0, epochs: int = 2) -> dict[str, Any]:
    """Every kind of state a reused module could carry over: BatchNorm's running statistics
    and counter, Dropout's random draws, Standardize's constants (not in the weights)."""
    raw = demo_request_spec(
        hidden=hidden,
        standardize=([mean] * FEATURES, [2.0] * FEATURES),
        local_epochs=epochs,
    )
    raw["model"]["layers"] = [
        raw["model"]["layers"][0],
        {"type": "linear", "in_features": FEATURES, "out_features": hidden},
        {"type": "batchnorm1d", "num_features": hidden},
        {"type": "relu"},
        {"type": "dropout", "p": 0.3},
        {"type": "linear", "in_features": hidden, "out_features": 2},
    ]
    raw["training"]["batch_size"] = 8
    return raw


def data(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    return x, (x[:, 0] + x[:, 3] > 0).astype(np.int64)


def assert_same(a: LocalResult, b: LocalResult) -> None:
    np.testing.assert_array_equal(a.update, b.update)
    assert a.steps == b.steps and a.num_examples == b.num_examples
    assert a.evaluation == b.evaluation
    assert a.explanation.keys() == b.explanation.keys()
    for name in a.explanation:
        np.testing.assert_array_equal(a.explanation[name], b.explanation[name])
    assert a.state.keys() == b.state.keys()
    for name in a.state:
        assert torch.equal(a.state[name], b.state[name]), name


@pytest.fixture(autouse=True)
def empty_pool() -> None:
    build._idle.clear()


def test_a_module_reused_across_rounds_trains_exactly_as_a_fresh_one() -> None:
    raw = stateful_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    x, y = data(1)
    fresh = train_local(spec, state, x, y, seed=7)
    assert not build._idle or len(build._idle[architecture_key(spec)]) == 1
    # The pooled module now holds trained weights, running statistics, gradients, train mode;
    # dirty it further with another round on other data and weights.
    other = load_weights(demo_weights(raw, seed=3), spec)
    train_local(spec, other, *data(2), seed=11)
    assert len(build._idle[architecture_key(spec)]) == 1
    reused = train_local(spec, state, x, y, seed=7)
    assert_same(fresh, reused)
    assert reused.steps > 0 and float(np.abs(reused.update).sum()) > 0


def test_torch_generator_is_left_as_it_was() -> None:
    raw = stateful_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_local(spec, state, *data(1), seed=5)  # builds (pool empty)
    train_local(spec, state, *data(1), seed=5)  # reuses
    assert torch.equal(torch.get_rng_state(), before)


def test_loaded_module_equals_build_then_load() -> None:
    raw = stateful_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    reference = build_module(spec)
    reference.load_state_dict(state)
    x = torch.as_tensor(data(4)[0])
    reference.eval()
    for _ in range(2):  # built, then reused
        with loaded_module(spec, state) as module:
            assert module.training
            assert all(p.grad is None for p in module.parameters())
            for name, tensor in reference.state_dict().items():
                assert torch.equal(module.state_dict()[name], tensor)
            module.eval()
            assert torch.equal(module(x), reference(x))
            module.train()
            module(x).sum().backward()  # leaves gradients and moved running statistics
            module.eval()  # and the wrong mode: the next lease must undo all three


def test_a_cache_keyed_by_spec_never_serves_another_spec() -> None:
    narrow = validate_spec(stateful_spec(hidden=12))
    wide = validate_spec(stateful_spec(hidden=13))
    shifted = validate_spec(stateful_spec(hidden=12, mean=1.0))  # only a constant differs
    keys = {architecture_key(s) for s in (narrow, wide, shifted)}
    assert len(keys) == 3
    assert architecture_key(narrow) == architecture_key(validate_spec(stateful_spec(hidden=12)))
    for spec in (narrow, wide, shifted, narrow):
        with torch.device("meta"):
            built = build_module(spec).state_dict()
        assert expected_tensors(spec) == {k: (tuple(t.shape), t.dtype) for k, t in built.items()}
    assert vector_size(wide) > vector_size(narrow)
    # A module of `narrow` in the pool is not handed out for `shifted` (whose Standardize
    # constants, outside the weights, differ).
    state = load_weights(demo_weights(stateful_spec(hidden=12)), narrow)
    with loaded_module(narrow, state):
        pass
    with loaded_module(shifted, state) as module:
        assert float(module[0].mean[0]) == 1.0
    with loaded_module(narrow, state) as module:
        assert float(module[0].mean[0]) == 0.0
    # Parameters and buffers are told apart: BatchNorm's statistics are buffers.
    kinds = {name: parameter for name, _, _, parameter in tensor_layout(narrow)}
    assert kinds["1.weight"] and not kinds["2.running_mean"]


def test_concurrent_leases_get_their_own_modules() -> None:
    raw = stateful_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    held: list[int] = []
    inside = threading.Barrier(3)

    def lease() -> None:
        with loaded_module(spec, state) as module:
            held.append(id(module))
            inside.wait(timeout=10)

    threads = [threading.Thread(target=lease) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(held)) == 3
    assert len(build._idle[architecture_key(spec)]) == 3


def test_batched_integrated_gradients_equal_the_step_by_step_sum() -> None:
    raw = stateful_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    x, y = data(5, n=40)
    module = build_module(spec)
    module.load_state_dict(state)
    sums = explanation_sums(spec, module, x, y)
    # The definition, one step at a time.
    inputs = torch.as_tensor(x)
    baseline = torch.as_tensor(_baseline(spec), dtype=torch.float32)
    target = torch.as_tensor(y)
    module.eval()
    total = torch.zeros_like(inputs)
    for step in range(IG_STEPS):
        point = (baseline + (step + 0.5) / IG_STEPS * (inputs - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(_logits(spec, module(point), target).sum(), point)
        total += grad
    attributions = ((inputs - baseline) * total / IG_STEPS).double().numpy()
    expected = np.minimum(np.abs(attributions), 100.0).sum(axis=0)
    np.testing.assert_allclose(sums["explain_abs"], expected, rtol=1e-5, atol=1e-7)


def test_norm_on_one_thread_equals_numpy() -> None:
    v = np.random.default_rng(0).normal(size=100_003).astype(np.float32)
    assert l2_norm(v) == pytest.approx(float(np.linalg.norm(v.astype(np.float64))), rel=1e-12)
    assert l2_norm(np.zeros(5, np.float32)) == 0.0
