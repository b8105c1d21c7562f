"""Spec fields for server optimizers, the federated algorithm and the local-work budget."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dataspace.demo import demo_request_spec
from training.modelspec import SpecError, validate_spec

BASE = demo_request_spec()


def with_training(**fields: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec["training"].update(fields)
    return spec


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({"type": "fedavg"}, {"type": "fedavg"}),
        ({"type": "fedavg", "lr": 1.5}, {"type": "fedavg", "lr": 1.5}),
        ({"type": "fedavgm"}, {"type": "fedavgm", "lr": 1.0, "momentum": 0.9}),
        ({"type": "fedavgm", "momentum": 0.5}, {"type": "fedavgm", "lr": 1.0, "momentum": 0.5}),
        (
            {"type": "fedadam", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-3},
            {"type": "fedadam", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-3},
        ),
        ({"type": "fedyogi"}, {"type": "fedyogi", "lr": 0.03, "betas": [0.9, 0.99], "eps": 1e-3}),
        (
            {"type": "fedadagrad", "lr": 0.1},
            {"type": "fedadagrad", "lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-3},
        ),
    ],
)
def test_server_optimizers_are_stored_with_every_hyper_parameter(
    given: dict[str, Any], stored: dict[str, Any]
) -> None:
    spec = validate_spec(with_training(server_optimizer=given))
    assert spec.training.server_optimizer == stored


@pytest.mark.parametrize(
    ("given", "code", "field"),
    [
        ({"type": "sgd"}, "unknown_optimizer", "training.server_optimizer.type"),
        ("fedadam", "unknown_optimizer", "training.server_optimizer"),
        (
            {"type": "fedavg", "momentum": 0.9},
            "unknown_field",
            "training.server_optimizer.momentum",
        ),
        (
            {"type": "fedavgm", "momentum": 1.0},
            "invalid_value",
            "training.server_optimizer.momentum",
        ),
        ({"type": "fedavgm", "lr": 0}, "invalid_value", "training.server_optimizer.lr"),
        ({"type": "fedyogi", "betas": [0.9]}, "invalid_value", "training.server_optimizer.betas"),
        (
            {"type": "fedadagrad", "betas": [0.9, 1.5]},
            "invalid_value",
            "training.server_optimizer.betas[1]",
        ),
        ({"type": "fedadam", "eps": -1}, "invalid_value", "training.server_optimizer.eps"),
        ({"type": "fedyogi", "lr": "fast"}, "invalid_value", "training.server_optimizer.lr"),
    ],
)
def test_bad_server_optimizers_name_the_field(given: Any, code: str, field: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(with_training(server_optimizer=given))
    assert (excinfo.value.code, excinfo.value.field) == (code, field)


def test_algorithm_defaults_to_fedavg_and_no_budget() -> None:
    spec = validate_spec(BASE)
    assert spec.training.algorithm == {"type": "fedavg"}
    assert spec.training.local_steps is None and spec.training.local_seconds is None


def test_scaffold_and_fednova_with_a_local_work_budget() -> None:
    spec = validate_spec(
        with_training(algorithm={"type": "scaffold"}, local_steps=20, local_seconds=2.5)
    )
    assert spec.training.algorithm == {"type": "scaffold", "control_clip": 100.0}
    assert (spec.training.local_steps, spec.training.local_seconds) == (20, 2.5)
    spec = validate_spec(with_training(algorithm={"type": "scaffold", "control_clip": 5}))
    assert spec.training.algorithm["control_clip"] == 5.0
    assert validate_spec(with_training(algorithm={"type": "fednova"})).training.algorithm == {
        "type": "fednova"
    }


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"algorithm": {"type": "fedprox"}}, "unknown_algorithm", "training.algorithm.type"),
        ({"algorithm": "scaffold"}, "unknown_algorithm", "training.algorithm"),
        (
            {"algorithm": {"type": "scaffold", "control_clip": 0}},
            "invalid_value",
            "training.algorithm.control_clip",
        ),
        (
            {"algorithm": {"type": "fednova", "control_clip": 1}},
            "unknown_field",
            "training.algorithm.control_clip",
        ),
        (
            {"algorithm": {"type": "scaffold"}, "optimizer": {"type": "adam", "lr": 0.01}},
            "invalid_value",
            "training.optimizer.type",
        ),
        ({"local_steps": 0}, "invalid_value", "training.local_steps"),
        ({"local_steps": 2.5}, "invalid_value", "training.local_steps"),
        ({"local_seconds": 0}, "invalid_value", "training.local_seconds"),
        ({"local_seconds": float("inf")}, "invalid_value", "training.local_seconds"),
    ],
)
def test_bad_algorithms_and_budgets_name_the_field(
    fields: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(with_training(**fields))
    assert (excinfo.value.code, excinfo.value.field) == (code, field)
