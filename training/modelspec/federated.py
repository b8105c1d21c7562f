"""What a pod adds to the masked vector under each ``training.algorithm``, and what the server
reads back from the decoded totals. Pure: the pod agent and the rounds engine both call it.

* ``fedavg``: weight · clip(Δ_i) and the weight (McMahan et al. 2017).
* ``scaffold``: the same, plus Δc_i, the change of the pod's control variate (Karimireddy et al.
  2020, Algorithm 1 option II). It rides in the same masked vector, so the service learns only
  Σ Δc_i; the cost is a second model-sized part in the upload (and c in the download).
* ``fednova``: weight · clip(Δ_i) / ‖a_i‖₁ and weight · ‖a_i‖₁, the pod's effective number of
  local steps (Wang et al. 2020, section 4); the server rescales from the totals alone
  (:func:`training.modelspec.server_optim.fednova_average`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..shared.numeric import l2_norm
from .server_optim import fednova_average
from .spec import ModelSpec
from .trainer import LocalResult


def fednova_norm(steps: int, momentum: float = 0.0) -> float:
    """‖a_i‖₁ for τ local SGD steps with momentum ρ (Wang et al. 2020, section 4 and appendix):
    a_i = [1 − ρ^τ, …, 1 − ρ] / (1 − ρ), so ‖a_i‖₁ = (τ − ρ(1 − ρ^τ)/(1 − ρ)) / (1 − ρ); = τ for
    plain SGD."""
    if steps <= 0:
        return 0.0
    if momentum == 0.0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


def _clip(vector: npt.NDArray[np.floating[Any]], max_norm: float) -> npt.NDArray[np.float64]:
    values = np.asarray(vector, dtype=np.float64)
    norm = l2_norm(values)
    return values if norm <= max_norm or norm == 0.0 else values * (max_norm / norm)


def federated_parts(
    spec: ModelSpec, result: LocalResult, *, weight: float, clip_norm: float
) -> dict[str, npt.NDArray[np.float64]]:
    """The ``update`` and ``weight`` parts of a pod's masked vector for the spec's algorithm,
    plus ``control_delta`` (SCAFFOLD) or ``local_steps`` (FedNova). The evaluation parts are the
    caller's. ``weight`` is the pod's FedAvg weight (examples, capped, or 1)."""
    algorithm = spec.training.algorithm.get("type", "fedavg")
    update = _clip(result.update, clip_norm)
    if algorithm == "fednova":
        norm = fednova_norm(result.steps, spec.training.optimizer.momentum)
        if norm == 0.0:
            weight = 0.0  # nothing trained: it must not dilute the others' average
        return {
            "update": weight * update / max(norm, 1.0),
            "weight": np.array([weight]),
            "local_steps": np.array([weight * norm]),
        }
    parts = {"update": weight * update, "weight": np.array([weight])}
    if algorithm == "scaffold":
        if result.control_delta is None:
            raise ValueError("a SCAFFOLD result carries its control-variate delta")
        parts["control_delta"] = np.asarray(result.control_delta, dtype=np.float64)
    return parts


def average_update(
    spec: ModelSpec, totals: Mapping[str, npt.NDArray[np.floating[Any]]]
) -> npt.NDArray[np.float32]:
    """The average update the server optimizer is applied to, from decoded totals only."""
    weight = float(totals["weight"][0])
    if spec.training.algorithm.get("type") == "fednova":
        return fednova_average(totals["update"], weight, float(totals["local_steps"][0]))
    return (totals["update"] / max(weight, 1e-12)).astype(np.float32)


def max_local_steps(spec: ModelSpec, max_examples: int) -> float:
    """The largest ‖a_i‖₁ one pod can report: its step budget (or what ``local_epochs`` over
    ``max_examples`` records allow), stretched by momentum. Sizes the ``local_steps`` part."""
    training = spec.training
    by_epochs = training.local_epochs * -(-max_examples // training.batch_size)
    steps = by_epochs if training.local_steps is None else min(by_epochs, training.local_steps)
    return fednova_norm(steps, training.optimizer.momentum)


def candidate_vectors(
    spec: ModelSpec,
    base: npt.NDArray[np.float32],
    optimizer_state: Mapping[str, npt.NDArray[np.float32]] | None,
    totals: Mapping[str, npt.NDArray[np.floating[Any]]],
    group_totals: Sequence[Mapping[str, npt.NDArray[np.floating[Any]]]],
) -> list[npt.NDArray[np.float32]]:
    """Group value (``training.modelspec.valuation``): for each group, the model the round would
    have published without it — the same server step from ``base`` on the sums of the other
    groups (Σ − S_g, decoded; the sums are linear). The optimizer state is the base's, copied."""
    from .server_optim import server_step
    from .valuation import totals_without

    out = []
    for group in group_totals:
        rest = totals_without(totals, group)
        state = (
            None if optimizer_state is None else {k: v.copy() for k, v in optimizer_state.items()}
        )
        vector, _ = server_step(
            spec.training.server_optimizer, base.copy(), average_update(spec, rest), state
        )
        out.append(vector.astype(np.float32))
    return out
