"""Bundled data sets for ``simulate`` and the demo, and how they are split across pods.

The data come from scikit-learn's copies on disk (no network). A fixed share is held out as the
test split no pod holds; the rest is partitioned across pods, IID or label-skewed with a
Dirichlet(α) prior per class (Hsu et al. 2019) — small α, few classes per pod.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DATASETS = {
    "breast_screening": ("health.breast_screening", "diagnosis"),
    "digits": ("handwriting.digits", "digit"),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    category: str
    label: str
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64]


def load(name: str) -> Dataset:
    from sklearn.datasets import load_breast_cancer, load_digits

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    bunch = load_breast_cancer() if name == "breast_screening" else load_digits()
    category, label = DATASETS[name]
    return Dataset(
        name, category, label, np.asarray(bunch.data, np.float64), np.asarray(bunch.target)
    )


def split(
    dataset: Dataset, *, seed: int, test_fraction: float = 0.2
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(pool indices, held-out test indices), stratified by label, deterministic under seed."""
    rng = np.random.default_rng(seed)
    pool: list[int] = []
    test: list[int] = []
    for label in np.unique(dataset.y):
        rows = rng.permutation(np.flatnonzero(dataset.y == label))
        cut = round(len(rows) * test_fraction)
        test.extend(rows[:cut])
        pool.extend(rows[cut:])
    return np.sort(np.array(pool)), np.sort(np.array(test))


def parse_partition(text: str) -> float | None:
    """``iid`` → None; ``dirichlet:ALPHA`` → ALPHA (> 0)."""
    if text == "iid":
        return None
    kind, _, value = text.partition(":")
    try:
        alpha = float(value)
    except ValueError:
        alpha = -1.0
    if kind != "dirichlet" or not alpha > 0:
        raise ValueError(
            f"partition must be 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, not {text!r}"
        )
    return alpha


def partition(
    labels: npt.NDArray[np.int64],
    pods: int,
    *,
    alpha: float | None,
    seed: int,
) -> list[npt.NDArray[np.intp]]:
    """Positions into ``labels`` for each pod; sizes differ by at most one record."""
    if pods > len(labels):
        raise ValueError(f"{len(labels)} records cannot give {pods} pods one record each")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    if alpha is None:
        return [np.sort(part) for part in np.array_split(order, pods)]
    # Hsu et al. 2019: each pod's label mix q ~ Dir(α·p), p the overall label frequencies;
    # sizes as equal as possible, so skew comes from the labels, not from empty pods.
    classes, counts = np.unique(labels, return_counts=True)
    prior = counts / counts.sum()
    remaining = {int(c): list(order[labels[order] == c]) for c in classes}
    parts = []
    for size in (len(chunk) for chunk in np.array_split(order, pods)):
        wanted = rng.multinomial(size, rng.dirichlet(alpha * prior * len(classes)))
        taken: list[int] = []
        for c, n in zip(classes, wanted, strict=True):
            pile = remaining[int(c)]
            taken.extend(pile[:n])
            del pile[:n]
        while len(taken) < size:  # a class ran out: fill from the fullest one
            pile = max(remaining.values(), key=len)
            taken.append(pile.pop())
        parts.append(np.sort(np.array(taken, dtype=np.intp)))
    return parts
