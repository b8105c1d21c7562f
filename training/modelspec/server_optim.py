"""Server-side optimizers on the decoded aggregate, and the server half of SCAFFOLD and FedNova.

Pure numpy, no Django: the rounds engine calls these with the average update it decoded from a
secure-aggregation total, and keeps the returned state (a dict of float32 vectors) next to the
model version it produced.

The server optimizers follow Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2:
the average client update Δ_t is a pseudo-gradient (it points downhill), and the server takes

* FedAvg:     x ← x + η Δ                     (η = 1 is McMahan et al. 2017)
* FedAvgM:    v ← β v + Δ;  x ← x + η v       (server momentum, Hsu et al. 2019)
* FedAdagrad: m ← β₁ m + (1 − β₁) Δ;  v ← v + Δ²
* FedYogi:    m as above;  v ← v − (1 − β₂) Δ² sign(v − Δ²)
* FedAdam:    m as above;  v ← β₂ v + (1 − β₂) Δ²
              and for the three adaptive ones x ← x + η m / (√v + τ), with v₋₁ = τ².

(Algorithm 2 omits bias correction; so do we, as the existing FedAdam did.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
State = dict[str, Vector]

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")

# Defaults that work on the bundled tasks: chosen with dataspace/bench/learning.py on a
# validation split carved out of the pods' data (digits, small CNN, Dirichlet 0.1, 100 pods),
# never on the test split. FedAdam keeps the η it had before this module, so stored requests
# that leave it out train as they did (η = 0.03 did as well as 0.01 there). For the adaptive
# optimizers τ sets the smallest step scale: with τ = 1e-3 a coordinate moves by at most about
# η per round, whatever the scale of its update (Reddi et al. 2021, section 5).
DEFAULTS: dict[str, dict[str, Any]] = {
    "fedavg": {"lr": 1.0},
    "fedavgm": {"lr": 1.0, "momentum": 0.9},
    "fedadam": {"lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-3},
    "fedyogi": {"lr": 0.03, "betas": [0.9, 0.99], "eps": 1e-3},
    "fedadagrad": {"lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-3},
}


def with_defaults(optimizer: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's settings with every missing hyper-parameter at its default."""
    kind = str(optimizer.get("type", "fedavg"))
    if kind not in DEFAULTS:
        raise ValueError(f"unknown server optimizer {kind!r}")
    return {"type": kind, **DEFAULTS[kind], **{k: v for k, v in optimizer.items() if k != "type"}}


def server_step(
    optimizer: Mapping[str, Any],
    current: npt.NDArray[np.floating[Any]],
    average_update: npt.NDArray[np.floating[Any]],
    state: Mapping[str, npt.NDArray[np.floating[Any]]] | None,
) -> tuple[Vector, State | None]:
    """One server step: the new flat model vector and the optimizer state to keep (or ``None``).

    ``state`` is what the previous round returned (``None`` in the first round). FedAvg keeps no
    state; FedAvgM keeps ``v``; the adaptive optimizers keep ``m`` and ``v``.
    """
    settings = with_defaults(optimizer)
    kind = settings["type"]
    delta = average_update
    if kind == "fedavg":
        lr = float(settings["lr"])
        moved = current + delta if lr == 1.0 else current + lr * delta
        return moved.astype(np.float32), None
    if kind == "fedavgm":
        lr, beta = float(settings["lr"]), float(settings["momentum"])
        velocity = delta if state is None else beta * state["v"] + delta
        new = current + lr * velocity
        return new.astype(np.float32), {"v": np.asarray(velocity, dtype=np.float32)}
    beta1, beta2 = (float(b) for b in settings["betas"])
    lr, eps = float(settings["lr"]), float(settings["eps"])
    m = state["m"] if state else np.zeros_like(delta)
    v = state["v"] if state else np.full_like(delta, eps * eps)
    m = beta1 * m + (1 - beta1) * delta
    square = np.square(delta)
    if kind == "fedadam":
        v = beta2 * v + (1 - beta2) * square
    elif kind == "fedyogi":
        v = v - (1 - beta2) * square * np.sign(v - square)
    else:  # fedadagrad
        v = v + square
    new = current + lr * m / (np.sqrt(v) + eps)
    return new.astype(np.float32), {"m": m.astype(np.float32), "v": v.astype(np.float32)}


def scaffold_server_control(
    control: npt.NDArray[np.floating[Any]] | None,
    control_delta_sum: npt.NDArray[np.floating[Any]],
    population: int,
) -> Vector:
    """SCAFFOLD's server control variate (Karimireddy et al. 2020, Algorithm 1, line 17):
    c ← c + (|S| / N) · mean_{i∈S} Δc_i = c + Σ_{i∈S} Δc_i / N.

    Only the masked total Σ Δc_i is known to the server, which is all this needs. ``population``
    is N, the number of pods that may be drawn (at least the cohort that produced the sum).
    """
    if population < 1:
        raise ValueError("the population must hold at least one pod")
    base = np.zeros_like(control_delta_sum) if control is None else control
    return (base + control_delta_sum / float(population)).astype(np.float32)


def fednova_average(
    update_sum: npt.NDArray[np.floating[Any]], weight_total: float, steps_total: float
) -> Vector:
    """FedNova's aggregate from masked totals (Wang et al. 2020, "Tackling the Objective
    Inconsistency Problem in Heterogeneous Federated Optimization", eq. 6 / Algorithm 1).

    Pod i sends p̃_i · d_i with d_i = Δ_i / ‖a_i‖₁ (its update normalised by its effective number
    of local steps) and p̃_i · ‖a_i‖₁, where p̃_i is its unnormalised weight. With W = Σ p̃_i:

        Δ = τ_eff · Σ p_i d_i,   p_i = p̃_i / W,   τ_eff = Σ p_i ‖a_i‖₁

    i.e. (steps_total / W) · (update_sum / W). The server then applies its optimizer to Δ as to
    any average update. A pod that managed fewer steps is counted with its own, smaller ‖a_i‖₁
    instead of dragging the model toward its local optimum or being dropped.
    """
    if weight_total <= 0:
        raise ValueError("the weight total must be positive")
    tau_eff = steps_total / weight_total
    return (update_sum * (tau_eff / weight_total)).astype(np.float32)
