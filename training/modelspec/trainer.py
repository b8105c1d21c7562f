"""Local training and evaluation on a pod's own data, deterministic under a seed.

The update a pod contributes is ``new − global`` (a flat float32 vector). The evaluation sums
are of the *global* model on the pod's held-out split, before training: that is federated
evaluation of the model the round started from (summed across pods under secure aggregation).

Local work is bounded by the spec's budget (``training.local_steps`` / ``local_seconds``) and by
what the device allows (``max_steps`` / ``max_seconds``): the pod stops at the first limit and
reports how many steps it took, so FedNova can normalise (Wang et al. 2020). Under SCAFFOLD
(Karimireddy et al. 2020) each step follows g(y) − c_i + c, and the pod's control variate moves
by option II of their Algorithm 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..shared.numeric import l2_norm
from .build import build_module, loaded_module, tensor_layout
from .explain import explanation_sums
from .spec import ModelSpec
from .vectors import flatten_state, vector_size, vector_slices


@dataclass(frozen=True)
class EvalResult:
    loss_sum: float
    correct: int
    examples: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.examples if self.examples else 0.0


@dataclass(frozen=True)
class LocalResult:
    update: npt.NDArray[np.float32]
    num_examples: int
    evaluation: EvalResult
    state: dict[str, torch.Tensor]
    steps: int = 0  # optimizer steps taken (each on one mini-batch)
    # SCAFFOLD only: Δc_i (L2-clipped to the spec's control_clip) and the pod's new c_i, which
    # it keeps until its next round. The server learns only the sum of the Δc_i.
    control_delta: npt.NDArray[np.float32] | None = None
    control: npt.NDArray[np.float32] | None = None
    # The global model's explanation sums on the held-out split (``training.modelspec.explain``).
    explanation: Mapping[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    # Group value: each candidate model (the last round's model without one group) evaluated
    # on the same held-out split as the global model (``training.modelspec.valuation``).
    candidates: tuple[EvalResult, ...] = ()


@dataclass(frozen=True)
class Budget:
    """The most local work one round may take: steps and seconds (``None``: no limit)."""

    steps: int | None = None
    seconds: float | None = None
    clock: Callable[[], float] = time.monotonic


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _targets(spec: ModelSpec, y: npt.NDArray[np.generic]) -> torch.Tensor:
    if spec.training.loss == "cross_entropy":
        return torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return torch.as_tensor(np.asarray(y), dtype=torch.float32)


_LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
    "mse": nn.MSELoss,
}


def _loss_fn(spec: ModelSpec) -> nn.Module:
    return _LOSSES[spec.training.loss](reduction="sum")  # the one asked for, not all three


def _output(spec: ModelSpec, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if (
        spec.training.loss != "cross_entropy"
        and out.dim() == target.dim() + 1
        and out.shape[-1] == 1
    ):
        return out.squeeze(-1)
    return out


def _correct(spec: ModelSpec, out: torch.Tensor, target: torch.Tensor) -> int:
    if spec.training.loss == "cross_entropy":
        return int((out.argmax(dim=-1) == target).sum())
    if spec.training.loss == "bce_with_logits":
        return int(((out > 0).float() == target).sum())
    return 0


def evaluate(
    spec: ModelSpec,
    state: Mapping[str, torch.Tensor],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
) -> EvalResult:
    with loaded_module(spec, state) as module:
        return _evaluate(spec, module, x, y)


def _evaluate(
    spec: ModelSpec, module: nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.generic]
) -> EvalResult:
    if len(x) == 0:
        return EvalResult(0.0, 0, 0)
    module.eval()
    with torch.no_grad():
        inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
        target = _targets(spec, y)
        out = _output(spec, module(inputs), target)
        loss = float(_loss_fn(spec)(out, target))
    return EvalResult(loss_sum=loss, correct=_correct(spec, out, target), examples=len(x))


def _optimizer(spec: ModelSpec, module: nn.Module) -> torch.optim.Optimizer:
    o = spec.training.optimizer
    if o.type == "adam":
        return torch.optim.Adam(
            module.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
    return torch.optim.SGD(
        module.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def _fit(
    spec: ModelSpec,
    module: nn.Module,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
    *,
    epochs: int,
    generator: torch.Generator,
    anchor: list[torch.Tensor] | None,
    budget: Budget | None = None,
    correction: list[torch.Tensor] | None = None,
) -> int:
    """Mini-batch training; returns the number of optimizer steps taken. ``correction`` is
    added to each parameter's gradient (SCAFFOLD's c − c_i, one tensor per parameter)."""
    if len(x) == 0:
        return 0
    budget = budget or Budget()
    started = budget.clock()
    steps = 0
    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    target = _targets(spec, y)
    optimizer = _optimizer(spec, module)
    loss_fn = _loss_fn(spec)
    mu = spec.training.fedprox_mu
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), spec.training.batch_size):
            if (budget.steps is not None and steps >= budget.steps) or (
                budget.seconds is not None and budget.clock() - started >= budget.seconds
            ):
                return steps
            batch = order[start : start + spec.training.batch_size]
            if len(batch) < 2 and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()
            ):
                continue  # BatchNorm cannot train on a single example
            optimizer.zero_grad()
            out = _output(spec, module(inputs[batch]), target[batch])
            loss = loss_fn(out, target[batch]) / len(batch)
            if mu > 0 and anchor is not None:
                # FedProx (Li et al. 2020): keep the local model near the global one.
                proximal = sum(
                    ((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchor, strict=True)
                )
                loss = loss + (mu / 2) * proximal
            loss.backward()
            if correction is not None:
                with torch.no_grad():
                    for p, c in zip(module.parameters(), correction, strict=True):
                        if p.grad is not None:
                            p.grad += c
            optimizer.step()
            steps += 1
    return steps


def _correction(
    spec: ModelSpec,
    module: nn.Module,
    server_control: npt.NDArray[np.floating[Any]],
    client_control: npt.NDArray[np.floating[Any]],
) -> list[torch.Tensor]:
    """c − c_i cut into one tensor per parameter (buffers such as BatchNorm's running
    statistics are not trained by gradients and get no correction)."""
    where = vector_slices(spec)
    diff = np.asarray(server_control, np.float32) - np.asarray(client_control, np.float32)
    return [
        torch.from_numpy(np.array(diff[where[name]], dtype=np.float32)).reshape(p.shape)
        for name, p in module.named_parameters()
    ]


def _parameter_coordinates(spec: ModelSpec) -> npt.NDArray[np.bool_]:
    mask = np.zeros(vector_size(spec), dtype=bool)
    where = vector_slices(spec)
    for name, _, _, parameter in tensor_layout(spec):
        if parameter:
            mask[where[name]] = True
    return mask


def _clip(vector: npt.NDArray[np.float32], max_norm: float) -> npt.NDArray[np.float32]:
    norm = l2_norm(vector)
    if norm <= max_norm or norm == 0.0:
        return vector
    return (vector * np.float32(max_norm / norm)).astype(np.float32)


def train_local(
    spec: ModelSpec,
    global_state: Mapping[str, torch.Tensor],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
    *,
    seed: int,
    holdout_fraction: float = 0.2,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    server_control: npt.NDArray[np.floating[Any]] | None = None,
    client_control: npt.NDArray[np.floating[Any]] | None = None,
    candidates: Sequence[Mapping[str, torch.Tensor]] = (),
) -> LocalResult:
    """Train up to ``local_epochs`` on the pod's data within the local-work budget (the spec's,
    and the device's own ``max_steps`` / ``max_seconds``); return the update, the evaluation sums
    and the number of steps taken.

    Under ``training.algorithm = scaffold`` pass the server's control variate c (sent with the
    task) and the pod's own c_i (kept between rounds; ``None`` in its first round: zeros).
    """
    training = spec.training
    scaffold = training.algorithm.get("type") == "scaffold"
    budget = Budget(
        steps=None if (s := _least(training.local_steps, max_steps)) is None else int(s),
        seconds=_least(training.local_seconds, max_seconds),
        clock=clock,
    )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator).numpy()
    held = round(len(x) * holdout_fraction) if len(x) >= 5 else 0
    eval_idx, train_idx = order[:held], order[held:]
    dim = vector_size(spec)
    c = np.zeros(dim, np.float32) if server_control is None else np.asarray(server_control)
    c_i = np.zeros(dim, np.float32) if client_control is None else np.asarray(client_control)
    if scaffold and (c.shape != (dim,) or c_i.shape != (dim,)):
        raise ValueError(f"control variates must have {dim} values")
    # The module comes loaded with the global weights (built once per architecture, never
    # initialised at random only to be overwritten); torch's generator starts from the seed.
    with torch.random.fork_rng(), loaded_module(spec, global_state) as module:
        # The CPU generator is the one training draws from (the module is on the CPU);
        # torch.manual_seed would seed every device's, behind a costly dynamo guard.
        torch.default_generator.manual_seed(seed)
        evaluation = _evaluate(spec, module, x[eval_idx], y[eval_idx])
        explanation = explanation_sums(spec, module, x[eval_idx], y[eval_idx])
        anchor = [p.detach().clone() for p in module.parameters()]
        steps = _fit(
            spec,
            module,
            x[train_idx],
            y[train_idx],
            epochs=training.local_epochs,
            generator=generator,
            anchor=anchor,
            budget=budget,
            correction=_correction(spec, module, c, c_i) if scaffold else None,
        )
        new_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    candidate_results = tuple(
        evaluate(spec, candidate, x[eval_idx], y[eval_idx]) for candidate in candidates
    )
    update = (flatten_state(new_state, spec) - flatten_state(global_state, spec)).astype(np.float32)
    control_delta = control = None
    if scaffold:
        # Option II: c_i+ = c_i − c + (x − y_i) / (K · η_l), on the trained coordinates only.
        delta = np.zeros(dim, np.float32)
        if steps > 0:
            mask = _parameter_coordinates(spec)
            estimate = -update.astype(np.float64) / (steps * training.optimizer.lr)
            delta[mask] = (estimate - c.astype(np.float64))[mask].astype(np.float32)
        control_delta = _clip(delta, float(training.algorithm["control_clip"]))
        control = (c_i + control_delta).astype(np.float32)
    return LocalResult(
        update=update,
        num_examples=len(train_idx),
        evaluation=evaluation,
        state=new_state,
        steps=steps,
        control_delta=control_delta,
        control=control,
        explanation=explanation,
        candidates=candidate_results,
    )


def train_centralized(
    spec: ModelSpec,
    state: Mapping[str, torch.Tensor],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
    *,
    epochs: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Baseline: the same model trained on pooled data (what federation is compared against)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build_module(spec)
        module.load_state_dict(dict(state))
        _fit(spec, module, x, y, epochs=epochs, generator=generator, anchor=None)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
