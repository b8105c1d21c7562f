"""The learning bench's tasks and data: the strategies, partitions, bundled data sets with their
models and tuned settings, the request each configuration submits, and the train/eval split.

Used by the in-process bench (:mod:`dataspace.bench.learning`), the live one
(:mod:`dataspace.bench.live_learning`) and :mod:`dataspace.bench.groups`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

STRATEGIES: dict[str, tuple[str, str]] = {
    # name: (training.algorithm, training.server_optimizer)
    "fedavg": ("fedavg", "fedavg"),
    "fedavgm": ("fedavg", "fedavgm"),
    "fedadam": ("fedavg", "fedadam"),
    "fedyogi": ("fedavg", "fedyogi"),
    "fedadagrad": ("fedavg", "fedadagrad"),
    "scaffold": ("scaffold", "fedavg"),
    "fednova": ("fednova", "fedavg"),
}
PARTITIONS = ("iid", "dirichlet:0.3", "dirichlet:0.1")
HETERO_PARTITION = "dirichlet:0.1"


@dataclass(frozen=True)
class Task:
    """A bundled data set, its model and the training settings shared by every strategy."""

    dataset: str
    rounds: int
    local_epochs: int
    local_steps: int
    batch_size: int
    lr: float
    # Server-optimizer hyper-parameters per strategy (the rest: server_optim.DEFAULTS).
    server: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_gap: float = 0.03
    central_epochs: int = 30  # the pooled baseline: enough epochs to converge on these sets


# The server steps chosen for both tasks (the same values suited both).
SERVER_STEPS: dict[str, dict[str, float]] = {
    "fedavgm": {"lr": 1.0, "momentum": 0.9},
    "fedadam": {"lr": 0.03},
    "fedyogi": {"lr": 0.03},
    "fedadagrad": {"lr": 0.1},
    "scaffold": {"lr": 1.5},
    "fednova": {"lr": 1.5},
}

# Chosen on a validation split carved out of the pods' pool (``--eval-on validation``, digits,
# Dirichlet 0.1, 100 pods), never on the test split; see the report of issue 17.
TASKS: dict[str, Task] = {
    "digits": Task(
        "digits",
        rounds=30,
        local_epochs=10,
        local_steps=20,
        batch_size=4,
        lr=0.1,
        server=SERVER_STEPS,
    ),
    "breast_screening": Task(
        "breast_screening",
        rounds=20,
        local_epochs=10,
        local_steps=5,
        batch_size=4,
        lr=0.05,
        server=SERVER_STEPS,
    ),
}


def model_layers(dataset: str, x_reference: npt.NDArray[np.floating[Any]]) -> list[dict[str, Any]]:
    if dataset == "digits":
        # Ink levels 0–16, scaled to [0, 1] by fixed constants (no data needed).
        return [
            {"type": "standardize", "mean": [0.0] * 64, "std": [16.0] * 64},
            {"type": "unflatten", "shape": [1, 8, 8]},
            {"type": "conv2d", "in_channels": 1, "out_channels": 16, "kernel_size": 3},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "flatten"},
            {"type": "linear", "in_features": 16 * 3 * 3, "out_features": 10},
        ]
    # The demo's MLP; its standardize constants are the label-free reference statistics of the
    # training pool (the demo's provider brings its own).
    mean = x_reference.mean(0)
    std = x_reference.std(0) + 1e-6
    n = x_reference.shape[1]
    return [
        {"type": "standardize", "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        {"type": "linear", "in_features": n, "out_features": 16},
        {"type": "relu"},
        {"type": "linear", "in_features": 16, "out_features": 2},
    ]


def request_spec(
    task: Task, strategy: str, pods: int, layers: list[dict[str, Any]], n_features: int
) -> dict[str, Any]:
    from pods.agent.datasets import DATASETS

    algorithm, server = STRATEGIES[strategy]
    category, label = DATASETS[task.dataset]
    return {
        "title": f"bench {task.dataset} {strategy}",
        "purpose": "Benchmark of federated strategies under label skew and slow devices.",
        "intended_use": "Comparing federated strategies in a benchmark; no decision about anyone.",
        "out_of_scope_uses": ["Any use outside this benchmark."],
        "data": {
            "category": category,
            "features": [f"x{i}" for i in range(n_features)],
            "label": label,
        },
        "model": {"layers": layers},
        "training": {
            "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "lr": task.lr},
            "local_epochs": task.local_epochs,
            "local_steps": task.local_steps,
            "batch_size": task.batch_size,
            "rounds": task.rounds,
            "cohort_size": pods,
            "min_participants": max(2, pods // 2),
            "algorithm": {"type": algorithm},
            "server_optimizer": {"type": server, **task.server.get(strategy, {})},
        },
        "privacy": {"secagg_threshold": 0.6},
    }


@dataclass(frozen=True)
class Data:
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_eval: npt.NDArray[np.float32]
    y_eval: npt.NDArray[np.int64]
    eval_split: str


def load_data(dataset: str, *, seed: int, eval_on: str) -> Data:
    from pods.agent import datasets

    data = datasets.load(dataset)
    pool, test = datasets.split(data, seed=seed)
    if eval_on == "validation":
        # A validation split out of the pool, for tuning; the test split is never read.
        sub = datasets.Dataset(data.name, data.category, data.label, data.x[pool], data.y[pool])
        keep, held = datasets.split(sub, seed=seed + 1)
        train_idx, eval_idx = pool[keep], pool[held]
    else:
        train_idx, eval_idx = pool, test
    return Data(
        data.x[train_idx].astype(np.float32),
        data.y[train_idx],
        data.x[eval_idx].astype(np.float32),
        data.y[eval_idx],
        eval_on,
    )
