"""Federated explanations: known features rank first, and the masked sum of the pods'
attributions is their plain sum under any tolerable dropout (real SecAgg+ encoding)."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataspace.demo import demo_request_spec, demo_weights
from tests.secagg.helpers import quantized_sum
from training.modelspec import SpecError, load_weights, validate_spec
from training.modelspec.explain import (
    ATTRIBUTION_CLIP,
    explanation_segments,
    explanation_sums,
    ranking,
    read_explanation,
)
from training.modelspec.trainer import train_centralized, train_local
from training.secagg import graph
from training.secagg.encoding import Layout, decode
from training.secagg.simulate import simulate_round
from training.secagg.wire import Stage

FEATURES = 6


def small_spec(**training: Any) -> dict[str, Any]:
    spec = demo_request_spec(hidden=8)
    spec["data"]["features"] = [f"f{i}" for i in range(FEATURES)]
    spec["model"]["layers"][0]["in_features"] = FEATURES
    spec["training"].update(training)
    return spec


def synthetic(seed: int, n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The label depends on f1 and f4 only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (1.5 * x[:, 1] - 1.0 * x[:, 4] > 0).astype(np.int64)
    return x, y


def test_the_features_the_label_depends_on_rank_first() -> None:
    raw = small_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    x, y = synthetic(0, 800)
    trained = train_centralized(spec, state, x, y, epochs=20, seed=0)
    from training.modelspec import build_module

    module = build_module(spec)
    module.load_state_dict(trained)
    sums = explanation_sums(spec, module, *synthetic(1, 300))
    explanation = read_explanation(spec, sums, round)

    assert ranking(explanation["feature_importance"])[:2] == ["f1", "f4"]
    assert explanation["per_class"][0]["examples"] + explanation["per_class"][1]["examples"] == 300
    assert all(c["accuracy"] > 0.85 for c in explanation["per_class"])
    for per_class in explanation["per_class"]:
        assert set(ranking(per_class["feature_importance"])[:2]) == {"f1", "f4"}


def test_each_example_attribution_is_clipped() -> None:
    raw = small_spec()
    spec = validate_spec(raw)
    from training.modelspec import build_module

    module = build_module(spec)
    x, y = synthetic(2, 10)
    sums = explanation_sums(spec, module, x * 1e6, y)
    assert sums["explain_abs"].max() <= 10 * ATTRIBUTION_CLIP
    assert sums["eval_class_examples"].sum() == 10


def test_regression_models_carry_no_explanation_parts() -> None:
    raw = small_spec(loss="mse")
    raw["model"]["layers"][-1]["out_features"] = 1
    assert explanation_segments(validate_spec(raw)) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.pop("intended_use"), "intended_use"),
        (lambda s: s.pop("out_of_scope_uses"), "out_of_scope_uses"),
        (lambda s: s.update(out_of_scope_uses=[]), "out_of_scope_uses"),
        (lambda s: s.update(out_of_scope_uses="all"), "out_of_scope_uses"),
        (lambda s: s.update(out_of_scope_uses=[" "]), "out_of_scope_uses[0]"),
        (lambda s: s.update(intended_use=""), "intended_use"),
    ],
)
def test_intended_and_out_of_scope_uses_are_required(change: Any, field: str) -> None:
    raw = copy.deepcopy(small_spec())
    change(raw)
    with pytest.raises(SpecError) as excinfo:
        validate_spec(raw)
    assert excinfo.value.field == field


# --- the masked sum of the pods' explanation parts --------------------------------------------

POOL = 12


@functools.cache
def pod_parts() -> tuple[dict[int, dict[str, npt.NDArray[np.float64]]], Layout]:
    """Each pod's explanation parts from real local training (the global model on its own
    held-out split), and the layout a round of the spec uses for a cohort of POOL."""
    raw = small_spec()
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    parts = {}
    for u in range(1, POOL + 1):
        x, y = synthetic(100 + u, 20 + 7 * u)
        result = train_local(spec, state, x, y, seed=u)
        parts[u] = {k: np.asarray(v, np.float64) for k, v in result.explanation.items()}
    base = Layout.for_training(model_dim=1, max_clients=POOL, clip_norm=1.0)
    layout = Layout(()).with_parts(explanation_segments(spec), max_clients=POOL)
    assert {s.name for s in layout.segments}.isdisjoint({s.name for s in base.segments})
    return parts, layout


STAGES = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, POOL), st.integers(0, 10_000), st.data())
def test_attribution_sums_equal_the_plain_sum_under_tolerable_dropout(
    n: int, seed: int, data: st.DataObject
) -> None:
    parts, layout = pod_parts()
    k = graph.choose_k(n)
    t = graph.choose_t(k, 0.6)
    tolerable = (n - 1) - t if n <= k + 1 else 0
    drops = data.draw(st.lists(st.integers(1, n), unique=True, max_size=max(0, tolerable)))
    drop = {u: data.draw(st.sampled_from(STAGES)) for u in drops}
    inputs = {u: parts[u] for u in range(1, n + 1)}

    result = simulate_round(inputs, layout, drop=drop, seed=seed)

    assert np.array_equal(result.total, quantized_sum(inputs, result.survivors, layout, seed))
    decoded = decode(result.total, layout)
    for segment in layout.segments:
        plain = sum(inputs[u][segment.name] for u in result.survivors)
        # each pod's value rounds (stochastically) to within one step of its scale
        step = len(result.survivors) / 2**segment.bits
        assert np.allclose(decoded[segment.name], plain, atol=step, rtol=0)


def test_a_pod_with_no_held_out_examples_adds_zeros() -> None:
    spec = validate_spec(small_spec())
    from training.modelspec import build_module

    empty = np.zeros((0, FEATURES), np.float32)
    sums = explanation_sums(spec, build_module(spec), empty, np.zeros(0, np.int64))
    assert all(not v.any() for v in sums.values())
    assert torch.is_grad_enabled()


def test_federated_ranking_agrees_with_central_attributions_on_the_bundled_data() -> None:
    """FedAvg over 20 pods of the bundled breast-screening data (label-skewed); after each round
    the cohort's summed attributions on the pods' held-out splits rank the features as the same
    attributions computed centrally on all the pooled data do (Spearman ≥ 0.9)."""
    from pods.agent import datasets
    from training.modelspec.explain import importance_of, spearman
    from training.modelspec.vectors import flatten_state, unflatten_state

    dataset = datasets.load("breast_screening")
    pool, test = datasets.split(dataset, seed=0)
    x, y = dataset.x[pool].astype(np.float32), dataset.y[pool]
    raw = demo_request_spec(
        standardize=(dataset.x[test].mean(0).tolist(), (dataset.x[test].std(0) + 1e-6).tolist()),
        local_epochs=2,
        lr=0.1,
    )
    spec = validate_spec(raw)
    state = load_weights(demo_weights(raw), spec)
    parts = datasets.partition(y, 20, alpha=1.0, seed=0)
    agreement = []
    for round_number in range(1, 4):
        results = [train_local(spec, state, x[r], y[r], seed=round_number) for r in parts]
        sums = {k: sum(r.explanation[k] for r in results) for k in results[0].explanation}
        federated = read_explanation(spec, sums, round)["feature_importance"]
        agreement.append(spearman(federated, importance_of(spec, state, x, y)))
        update = np.mean([r.update for r in results], axis=0)
        state = unflatten_state(flatten_state(state, spec) + update, spec, like=state)
    print(f"Spearman federated vs central per round: {[round(a, 3) for a in agreement]}")
    assert min(agreement) >= 0.9


def test_a_one_hot_field_is_explained_as_one_feature() -> None:
    """A categorical field spans several model inputs; its attribution is their sum, so the
    parts keep one entry per feature (a typed category's spec, one-hot activity)."""
    import torch

    from tests.typed_category import FEATURES, WIDTH, sleep_spec
    from training.modelspec import validate_spec
    from training.modelspec.build import build_module
    from training.modelspec.explain import explanation_sums

    spec = validate_spec(sleep_spec())
    assert len(FEATURES) < WIDTH
    torch.manual_seed(0)
    module = build_module(spec)
    x = np.random.default_rng(0).normal(size=(12, WIDTH)).astype(np.float32)
    y = np.arange(12) % 2
    parts = explanation_sums(spec, module, x, y)
    assert parts["explain_abs"].shape == (len(FEATURES),)
    assert parts["explain_class"].shape == (2 * len(FEATURES),)
    assert parts["explain_abs"].sum() > 0
