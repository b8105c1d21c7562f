"""Federated explanations: feature attributions of the global model, summed under the masks.

Each pod explains the *global* model a round starts from on its own held-out split, with
integrated gradients (Sundararajan et al. 2017) of the logit of each example's true class, from
a baseline the spec fixes (the first ``standardize`` layer's means, else zeros). It adds the sums
of the absolute attributions — per feature, and per feature for each true class — and its
per-class evaluation counts as extra named parts of the same masked vector, so the service only
ever learns the cohort's sums (like the evaluation sums). Each example's attribution is clipped
to ``ATTRIBUTION_CLIP`` so that one pod's part has a known bound (the encoding needs it).

Pure (no Django): the pod agent, the rounds engine and the card all call it. Every parameter
comes from the spec, none from a round's task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .spec import ModelSpec

ATTRIBUTION_CLIP = 100.0  # per example and feature, in logit units
IG_STEPS = 16  # midpoint Riemann sum of the path integral
IG_BATCH_VALUES = 1 << 20  # input values per forward pass of integrated gradients (4 MiB)
MAX_CLASSES = 20  # per-class parts only up to this many classes
METHOD = f"integrated gradients ({IG_STEPS} steps), |attribution| of the true class's logit"

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Explained:
    """What a spec's explanation parts look like: ``features`` inputs, ``classes`` classes."""

    features: int
    classes: int


def explained(spec: ModelSpec) -> Explained | None:
    """The shape of the explanation parts, or ``None`` when the model is not explained: a
    regression, an input that is not a feature vector (embeddings), too many classes."""
    if any(layer.type == "embedding" for layer in spec.layers):
        return None
    if spec.training.loss == "cross_entropy":
        classes = spec.output_shape[0]
    elif spec.training.loss == "bce_with_logits" and spec.output_shape in ((1,), ()):
        classes = 2
    else:
        return None
    if classes > MAX_CLASSES:
        return None
    return Explained(features=len(spec.data.features), classes=classes)


def explanation_segments(spec: ModelSpec) -> list[tuple[str, int, float]]:
    """The parts (name, size, bound on one pod's value) the masked vector carries for the spec;
    the pod's held-out examples are at most ``privacy.max_examples``."""
    shape = explained(spec)
    if shape is None:
        return []
    cap = float(spec.privacy.max_examples)
    f, c = shape.features, shape.classes
    return [
        ("explain_abs", f, ATTRIBUTION_CLIP * cap),
        ("explain_class", c * f, ATTRIBUTION_CLIP * cap),
        ("eval_class_correct", c, cap),
        ("eval_class_examples", c, cap),
    ]


def _baseline(spec: ModelSpec) -> Vector:
    first = spec.layers[0]
    if first.type == "standardize":
        return np.asarray(first.args["mean"], dtype=np.float64)
    return np.zeros(spec.data.width)


def _feature_of_input(spec: ModelSpec) -> npt.NDArray[np.int64]:
    """For each model input, the index of the feature it encodes: a one-hot categorical
    field spans several inputs, and its attribution is the sum over them."""
    data = spec.data
    by_name = {f.name: f for f in data.schema or ()}
    widths = [by_name[name].width if name in by_name else 1 for name in data.features]
    return np.repeat(np.arange(len(widths)), widths)


def explanation_sums(
    spec: ModelSpec, module: Any, x: npt.NDArray[np.floating[Any]], y: npt.NDArray[np.generic]
) -> dict[str, Vector]:
    """The pod's explanation parts for ``module`` (the global model) on its held-out ``x, y``:
    Σ|attribution| per feature, the same per true class (flattened class-major), and the correct
    and example counts per class. Empty when the spec is not explained."""
    import torch

    shape = explained(spec)
    if shape is None:
        return {}
    f, c = shape.features, shape.classes
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    keep = (labels >= 0) & (labels < c)
    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32)[keep])
    labels = labels[keep]
    n = len(labels)
    attributions = np.zeros((n, spec.data.width))
    correct = np.zeros(c)
    if n:
        baseline = torch.as_tensor(_baseline(spec), dtype=torch.float32)
        target = torch.as_tensor(labels)
        module.eval()
        # Every step's points in one batch (step-major), a slice of the examples at a time: in
        # eval mode each row's gradient is its own, so one forward and backward pass per slice
        # replace IG_STEPS small ones.
        alphas = ((torch.arange(IG_STEPS, dtype=torch.float32) + 0.5) / IG_STEPS).reshape(-1, 1, 1)
        delta = inputs - baseline
        total = torch.empty_like(inputs)
        rows = max(1, IG_BATCH_VALUES // (IG_STEPS * max(1, spec.data.width)))
        for start in range(0, n, rows):
            part = delta[start : start + rows]
            m = len(part)
            points = (baseline + alphas * part).reshape(IG_STEPS * m, *inputs.shape[1:])
            points.requires_grad_(True)
            logits = _logits(spec, module(points), target[start : start + m].repeat(IG_STEPS))
            (grad,) = torch.autograd.grad(logits.sum(), points)
            total[start : start + m] = grad.reshape(IG_STEPS, m, *inputs.shape[1:]).sum(dim=0)
        attributions = (delta * total / IG_STEPS).detach().double().numpy()
        with torch.no_grad():
            predicted = _predicted(spec, module(inputs)).numpy()
        np.add.at(correct, labels, (predicted == labels).astype(np.float64))
    per_feature = np.zeros((n, f))
    np.add.at(per_feature.T, _feature_of_input(spec), np.abs(attributions).T)
    clipped = np.minimum(per_feature, ATTRIBUTION_CLIP)
    per_class = np.zeros((c, f))
    np.add.at(per_class, labels, clipped)
    return {
        "explain_abs": clipped.sum(axis=0),
        "explain_class": per_class.reshape(-1),
        "eval_class_correct": correct,
        "eval_class_examples": np.bincount(labels, minlength=c).astype(np.float64),
    }


def _logits(spec: ModelSpec, out: Any, target: Any) -> Any:
    """Each example's logit of its true class (binary: the one logit; its sign is lost in
    the absolute value)."""
    if spec.training.loss == "cross_entropy":
        return out.gather(1, target.reshape(-1, 1)).reshape(-1)
    return out.reshape(len(target), -1)[:, 0]


def _predicted(spec: ModelSpec, out: Any) -> Any:
    if spec.training.loss == "cross_entropy":
        return out.argmax(dim=-1)
    return (out.reshape(out.shape[0], -1)[:, 0] > 0).long()


def read_explanation(
    spec: ModelSpec, totals: Mapping[str, Vector], coarse: Callable[[float], int]
) -> dict[str, Any]:
    """What the decoded cohort sums say (empty if the round carried no explanation parts):
    the mean |attribution| per feature over the cohort's held-out examples, and per class its
    (coarse) example count, accuracy and mean |attribution| per feature."""
    shape = explained(spec)
    if shape is None or "explain_abs" not in totals:
        return {}
    features = list(spec.data.features)
    f, c = shape.features, shape.classes
    sums = np.maximum(np.asarray(totals["explain_abs"], dtype=np.float64), 0.0)
    counts = np.maximum(np.asarray(totals["eval_class_examples"], dtype=np.float64), 0.0)
    examples = float(counts.sum())
    per_class_sums = np.maximum(np.asarray(totals["explain_class"]).reshape(c, f), 0.0)
    correct = np.asarray(totals["eval_class_correct"], dtype=np.float64)

    def mean(values: Vector, count: float) -> dict[str, float]:
        pairs = zip(features, values, strict=True)
        return {name: float(v) / count if count >= 1 else 0.0 for name, v in pairs}

    return {
        "feature_importance": mean(sums, examples),
        "per_class": [
            {
                "class": k,
                "examples": coarse(float(counts[k])),
                "accuracy": float(correct[k]) / float(counts[k]) if counts[k] >= 1 else None,
                "feature_importance": mean(per_class_sums[k], float(counts[k])),
            }
            for k in range(c)
        ],
        "method": METHOD,
    }


def ranking(importance: Mapping[str, float]) -> list[str]:
    """Feature names, most important first."""
    return sorted(importance, key=lambda name: (-importance[name], name))


def importance_of(
    spec: ModelSpec,
    state: Mapping[str, Any],
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.generic],
) -> dict[str, float]:
    """Feature importance computed centrally (e.g. on pooled data), the same way the pods do:
    what the federated figure is compared against."""
    from .build import build_module

    module = build_module(spec)
    module.load_state_dict(dict(state))
    explanation = read_explanation(spec, explanation_sums(spec, module, x, y), round)
    return dict(explanation.get("feature_importance", {}))


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman's rank correlation of two importance maps over their common features."""
    from scipy.stats import spearmanr

    names = sorted(set(a) & set(b))
    return float(spearmanr([a[n] for n in names], [b[n] for n in names]).statistic)
