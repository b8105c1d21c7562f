"""Local training and evaluation on a pod's own data, deterministic under a seed.

The update a pod contributes is ``new − global`` (a flat float32 vector). The evaluation sums
are of the *global* model on the pod's held-out split, before training: that is federated
evaluation of the model the round started from (summed across pods under secure aggregation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .build import build_module
from .spec import ModelSpec
from .vectors import flatten_state


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


def _targets(spec: ModelSpec, y: npt.NDArray[np.generic]) -> torch.Tensor:
    if spec.training.loss == "cross_entropy":
        return torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return torch.as_tensor(np.asarray(y), dtype=torch.float32)


def _loss_fn(spec: ModelSpec) -> nn.Module:
    losses: dict[str, nn.Module] = {
        "cross_entropy": nn.CrossEntropyLoss(reduction="sum"),
        "bce_with_logits": nn.BCEWithLogitsLoss(reduction="sum"),
        "mse": nn.MSELoss(reduction="sum"),
    }
    return losses[spec.training.loss]


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
    module = build_module(spec)
    module.load_state_dict(dict(state))
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
) -> None:
    if len(x) == 0:
        return
    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    target = _targets(spec, y)
    optimizer = _optimizer(spec, module)
    loss_fn = _loss_fn(spec)
    mu = spec.training.fedprox_mu
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), spec.training.batch_size):
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
            optimizer.step()


def train_local(
    spec: ModelSpec,
    global_state: Mapping[str, torch.Tensor],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
    *,
    seed: int,
    holdout_fraction: float = 0.2,
) -> LocalResult:
    """Train ``local_epochs`` on the pod's data; return the update and evaluation sums."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator).numpy()
    held = round(len(x) * holdout_fraction) if len(x) >= 5 else 0
    eval_idx, train_idx = order[:held], order[held:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build_module(spec)
        module.load_state_dict(dict(global_state))
        evaluation = _evaluate(spec, module, x[eval_idx], y[eval_idx])
        anchor = [p.detach().clone() for p in module.parameters()]
        _fit(
            spec,
            module,
            x[train_idx],
            y[train_idx],
            epochs=spec.training.local_epochs,
            generator=generator,
            anchor=anchor,
        )
    new_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    update = flatten_state(new_state, spec) - flatten_state(global_state, spec)
    return LocalResult(
        update=update.astype(np.float32),
        num_examples=len(train_idx),
        evaluation=evaluation,
        state=new_state,
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
