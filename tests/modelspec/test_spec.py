"""The declarative model spec: every allowed layer round-trips; shapes and limits are enforced."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer

from dataspace.demo import demo_request_spec, demo_weights
from pods.agent.protocol import canonical_json, plan_hash
from training.modelspec import (
    SpecError,
    SpecLimits,
    build_module,
    count_parameters,
    dump_weights,
    expected_tensors,
    flatten_state,
    load_weights,
    spec_from_sequential,
    unflatten_state,
    validate_spec,
    vector_size,
)
from training.modelspec.trainer import evaluate, train_local

BASE = demo_request_spec()


def with_layers(
    n_features: int, layers: list[dict[str, Any]], loss: str = "cross_entropy"
) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec["data"]["features"] = [f"f{i}" for i in range(n_features)]
    spec["model"]["layers"] = layers
    spec["training"]["loss"] = loss
    return spec


# Each: number of features, layers. Together they use every allowed layer type.
NETWORKS: dict[str, tuple[int, list[dict[str, Any]]]] = {
    "mlp": (
        30,
        [
            {"type": "linear", "in_features": 30, "out_features": 8},
            {"type": "relu"},
            {"type": "dropout", "p": 0.1},
            {"type": "linear", "in_features": 8, "out_features": 2, "bias": False},
        ],
    ),
    "norms": (
        12,
        [
            {"type": "batchnorm1d", "num_features": 12},
            {"type": "layernorm", "normalized_shape": 12},
            {"type": "linear", "in_features": 12, "out_features": 4},
            {"type": "gelu"},
            {"type": "linear", "in_features": 4, "out_features": 3},
            {"type": "softmax", "dim": -1},
        ],
    ),
    "conv2d": (
        64,
        [
            {"type": "unflatten", "shape": [1, 8, 8]},
            {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"type": "batchnorm2d", "num_features": 4},
            {"type": "tanh"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "avgpool2d", "kernel_size": 2, "stride": 1},
            {"type": "flatten"},
            {"type": "linear", "in_features": 36, "out_features": 10},
        ],
    ),
    "conv1d": (
        20,
        [
            {"type": "unflatten", "shape": [2, 10]},
            {"type": "conv1d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 1},
            {"type": "sigmoid"},
            {"type": "maxpool1d", "kernel_size": 2},
            {"type": "avgpool1d", "kernel_size": 2, "stride": 1},
            {"type": "flatten"},
            {"type": "linear", "in_features": 9, "out_features": 2},
        ],
    ),
    "gru": (
        16,
        [
            {"type": "unflatten", "shape": [4, 4]},
            {"type": "gru", "input_size": 4, "hidden_size": 5, "num_layers": 2, "output": "last"},
            {"type": "linear", "in_features": 5, "out_features": 2},
        ],
    ),
    "lstm": (
        16,
        [
            {"type": "unflatten", "shape": [8, 2]},
            {"type": "lstm", "input_size": 2, "hidden_size": 3, "output": "sequence"},
            {"type": "flatten"},
            {"type": "linear", "in_features": 24, "out_features": 2},
        ],
    ),
    "standardize": (
        4,
        [
            {"type": "standardize", "mean": [0.5, 1, 2, 3], "std": [1, 2, 0.25, 4]},
            {"type": "linear", "in_features": 4, "out_features": 2},
        ],
    ),
    "embedding": (
        6,
        [
            {"type": "embedding", "num_embeddings": 10, "embedding_dim": 3},
            {"type": "flatten"},
            {"type": "linear", "in_features": 18, "out_features": 2},
        ],
    ),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_spec_torch_round_trip(name: str) -> None:
    n_features, layers = NETWORKS[name]
    spec_json = with_layers(n_features, layers)
    spec = validate_spec(spec_json)
    module = build_module(spec)

    again = spec_from_sequential(
        module,
        data=spec_json["data"],
        training=spec_json["training"],
        privacy=spec_json["privacy"],
        title=spec_json["title"],
        purpose=spec_json["purpose"],
        intended_use=spec_json["intended_use"],
        out_of_scope_uses=spec_json["out_of_scope_uses"],
    )

    assert validate_spec(again).layers == spec.layers
    expected = expected_tensors(spec)
    assert {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()} == expected
    assert (
        count_parameters(spec)
        == spec.parameter_count
        == sum(p.numel() for p in module.parameters())
    )
    x = (
        torch.randint(0, 10, (3, n_features)).float()
        if name == "embedding"
        else torch.randn(3, n_features)
    )
    module.eval()
    assert tuple(module(x).shape) == (3, *spec.output_shape)
    weights = dump_weights(module.state_dict())
    loaded = load_weights(weights, spec)
    assert all(torch.equal(loaded[k], module.state_dict()[k]) for k in expected)


def test_unsupported_module_is_refused_by_the_helper() -> None:
    with pytest.raises(SpecError) as excinfo:
        spec_from_sequential(
            torch.nn.Sequential(torch.nn.Linear(30, 2), torch.nn.PReLU()),
            data=BASE["data"],
            training=BASE["training"],
            privacy=BASE["privacy"],
            title="t",
            purpose="p",
            intended_use="u",
            out_of_scope_uses=["o"],
        )
    assert excinfo.value.code == "unknown_layer"


@pytest.mark.parametrize(
    ("layers", "code", "field"),
    [
        ([{"type": "unflatten", "shape": [3, 3]}], "shape_mismatch", "model.layers[0].shape"),
        (
            [
                {"type": "unflatten", "shape": [1, 5, 6]},
                {"type": "conv2d", "in_channels": 2, "out_channels": 1, "kernel_size": 2},
            ],
            "shape_mismatch",
            "model.layers[1].in_channels",
        ),
        (
            [
                {"type": "unflatten", "shape": [1, 5, 6]},
                {"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 9},
            ],
            "shape_mismatch",
            "model.layers[1]",
        ),
        (
            [{"type": "linear", "in_features": 30, "out_features": 2, "activation": "relu"}],
            "unknown_field",
            "model.layers[0].activation",
        ),
        (
            [{"type": "linear", "in_features": 30, "out_features": True}],
            "invalid_value",
            "model.layers[0].out_features",
        ),
        ([{"type": "softmax", "dim": 0}], "invalid_value", "model.layers[0].dim"),
        ([{"type": "dropout", "p": 1.0}], "invalid_value", "model.layers[0].p"),
        (["linear"], "malformed_spec", "model.layers[0]"),
        (
            [{"type": "standardize", "mean": [0.0] * 30, "std": [1.0] * 29 + [0.0]}],
            "invalid_value",
            "model.layers[0].std[29]",
        ),
        (
            [{"type": "standardize", "mean": [0.0] * 29, "std": [1.0] * 29}],
            "shape_mismatch",
            "model.layers[0]",
        ),
    ],
)
def test_bad_layers(layers: list[Any], code: str, field: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(with_layers(30, layers))
    assert (excinfo.value.code, excinfo.value.field) == (code, field)


def test_limits() -> None:
    deep = with_layers(
        30, [{"type": "relu"}] * 5 + [{"type": "linear", "in_features": 30, "out_features": 2}]
    )
    with pytest.raises(SpecError) as layers:
        validate_spec(deep, SpecLimits(max_layers=4))
    with pytest.raises(SpecError) as params:
        validate_spec(BASE, SpecLimits(max_parameters=100))
    with pytest.raises(SpecError) as size:
        load_weights(demo_weights(BASE), validate_spec(BASE), SpecLimits(max_weights_bytes=100))
    assert (layers.value.code, params.value.code, size.value.code) == (
        "too_many_layers",
        "too_many_parameters",
        "weights_too_large",
    )


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31))
def test_flat_vectors_round_trip(seed: int) -> None:
    spec = validate_spec(with_layers(64, NETWORKS["conv2d"][1]))
    torch.manual_seed(seed % 1000)
    state = build_module(spec).state_dict()
    vector = flatten_state(state, spec)
    assert vector.dtype == np.float32 and vector.shape == (vector_size(spec),)
    back = unflatten_state(vector, spec, like=state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert "2.num_batches_tracked" in state and vector_size(spec) == spec.parameter_count + 2 * 4


def test_plan_hash_is_stable_and_sensitive() -> None:
    spec = demo_request_spec()
    base = plan_hash(spec, "a" * 64, "b" * 64)
    reordered = dict(reversed(list(spec.items())))
    assert plan_hash(reordered, "a" * 64, "b" * 64) == base
    changed = copy.deepcopy(spec)
    changed["training"]["rounds"] = 11
    assert (
        len(
            {
                base,
                plan_hash(changed, "a" * 64, "b" * 64),
                plan_hash(spec, "c" * 64, "b" * 64),
                plan_hash(spec, "a" * 64, "c" * 64),
            }
        )
        == 4
    )
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def breast_subset(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    return x[:n].astype(np.float32), data.target[:n]


def test_trainer_is_deterministic_and_learns() -> None:
    spec_json = demo_request_spec()
    spec_json["training"]["local_epochs"] = 5
    spec = validate_spec(spec_json)
    torch.manual_seed(0)
    state = build_module(spec).state_dict()
    x, y = breast_subset()
    first = train_local(spec, state, x, y, seed=3)
    second = train_local(spec, state, x, y, seed=3)
    assert np.array_equal(first.update, second.update)
    assert first.num_examples == 96 and first.evaluation.examples == 24
    before = evaluate(spec, state, x, y)
    after = evaluate(spec, first.state, x, y)
    assert after.loss_sum < before.loss_sum
    assert after.accuracy > 0.8


def test_fedprox_term_changes_the_update() -> None:
    plain_json = demo_request_spec()
    plain_json["training"]["local_epochs"] = 3
    prox_json = copy.deepcopy(plain_json)
    prox_json["training"]["fedprox_mu"] = 5.0
    plain, prox = validate_spec(plain_json), validate_spec(prox_json)
    torch.manual_seed(0)
    state = build_module(plain).state_dict()
    x, y = breast_subset()
    a = train_local(plain, state, x, y, seed=1).update
    b = train_local(prox, state, x, y, seed=1).update
    assert np.linalg.norm(b) < np.linalg.norm(a)


# -- provider texts per language ---------------------------------------------------------------


def test_title_and_purpose_may_be_given_per_language() -> None:
    spec = demo_request_spec()
    spec["title"] = {"en": "Screening", "fr": "Dépistage", "de": "Früherkennung"}
    spec["purpose"] = {"en": "Why.", "de": "Warum."}
    parsed = validate_spec(spec)
    assert parsed.title == "Screening"
    assert parsed.texts.language == "en"
    assert parsed.texts.purpose_in("fr") == ("Why.", "en")
    assert parsed.texts.purpose_in("de") == ("Warum.", "de")


def test_a_plain_string_is_in_the_specs_declared_language() -> None:
    spec = demo_request_spec()
    spec["language"] = "de"
    spec["title"] = "Früherkennung"
    parsed = validate_spec(spec)
    assert parsed.texts.titles == {"de": "Früherkennung"}
    assert parsed.texts.title_in("en") == ("Früherkennung", "de")


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"language": "es"}, "unknown_language", "language"),
        ({"title": {"en": "A", "es": "B"}}, "unknown_language", "title.es"),
        ({"title": {"fr": "Seulement en français"}}, "invalid_value", "title.en"),
        ({"purpose": {"en": ""}}, "invalid_value", "purpose.en"),
        ({"purpose": {}}, "invalid_value", "purpose"),
        ({"title": ["en", "A"]}, "invalid_value", "title"),
        ({"language": "fr", "title": {"en": "Only English"}}, "invalid_value", "title.fr"),
    ],
)
def test_bad_provider_texts_are_refused(changes: dict, code: str, field: str) -> None:  # type: ignore[type-arg]
    spec = demo_request_spec()
    spec.update(changes)
    with pytest.raises(SpecError) as excinfo:
        validate_spec(spec)
    assert (excinfo.value.code, excinfo.value.field) == (code, field)
