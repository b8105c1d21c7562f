"""The demo's model request (a small classifier on the bundled breast-screening data) and its
report: the table's group-value rows and report.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dataspace.catalog import BUNDLED
from training.card_page import plot_group_values, valued_rounds

BREAST = "health.breast_screening"


def breast_features() -> list[str]:
    categories = json.loads(BUNDLED.read_text(encoding="utf-8"))
    fields = next(c["fields"] for c in categories if c["slug"] == BREAST)
    return [f["name"] for f in fields if f["name"] != "diagnosis"]


def demo_request_spec(
    *,
    rounds: int = 10,
    cohort_size: int = 50,
    min_participants: int = 10,
    dp: dict[str, Any] | None = None,
    title: str = "Breast screening: a shared risk model",
    hidden: int = 16,
    standardize: tuple[list[float], list[float]] | None = None,
    local_epochs: int = 1,
    lr: float = 0.05,
) -> dict[str, Any]:
    """The demo's request. ``standardize``: (mean, std) per feature, the provider's reference
    statistics, applied as the model's first (fixed, parameter-free) layer."""
    features = breast_features()
    first: list[dict[str, Any]] = []
    if standardize is not None:
        first = [{"type": "standardize", "mean": standardize[0], "std": standardize[1]}]
    privacy: dict[str, Any] = {"secagg_threshold": 0.6}
    if dp is not None:
        privacy["dp"] = dp
    return {
        "title": title,
        "purpose": (
            "Train a model that helps radiologists tell benign from malignant breast masses "
            "from fine-needle aspirate measurements, so fewer people need a second biopsy."
        ),
        "intended_use": (
            "A second opinion for radiologists reading fine-needle aspirate measurements of a "
            "breast mass already found, in screening programmes like the one the data came from."
        ),
        "out_of_scope_uses": [
            "Diagnosing anyone without a clinician's review.",
            "Screening people without a mass found by imaging or examination.",
            "Decisions about insurance, employment or credit.",
        ],
        "data": {"category": BREAST, "features": features, "label": "diagnosis"},
        "model": {
            "layers": [
                *first,
                {"type": "linear", "in_features": len(features), "out_features": hidden},
                {"type": "relu"},
                {"type": "linear", "in_features": hidden, "out_features": 2},
            ]
        },
        "training": {
            "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "lr": lr},
            "local_epochs": local_epochs,
            "batch_size": 32,
            "rounds": rounds,
            "cohort_size": cohort_size,
            "min_participants": min_participants,
        },
        "privacy": privacy,
    }


def demo_weights(spec: dict[str, Any], seed: int = 0) -> bytes:
    """Initial weights for a spec: the built module's fresh parameters, as safetensors."""
    import torch

    from training.modelspec import build_module, dump_weights, validate_spec

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build_module(validate_spec(spec))
    return bytes(dump_weights(module.state_dict()))


def explanation_report(model_request: Any, x_pool: Any, y_pool: Any) -> dict[str, Any]:
    """The last completed round's federated feature importance (decoded from the masked sums)
    beside the same attributions computed centrally on the pooled data, with the model that
    round evaluated, and Spearman's correlation of the two rankings."""
    from training.modelspec import load_weights, validate_spec
    from training.modelspec.explain import importance_of, ranking, spearman

    last = (
        model_request.rounds_run.filter(status="completed", metrics__has_key="explanation")
        .order_by("-number")
        .first()
    )
    if last is None:
        return {}
    spec = validate_spec(model_request.spec)
    federated = last.metrics["explanation"]["feature_importance"]
    with last.base_version.weights.open("rb") as handle:
        state = load_weights(handle.read(), spec)
    central = importance_of(spec, state, x_pool, y_pool)
    return {
        "round": last.number,
        "model_evaluated": last.number - 1,
        "federated_importance": {k: round(v, 5) for k, v in federated.items()},
        "central_importance": {k: round(v, 5) for k, v in central.items()},
        "federated_top5": ranking(federated)[:5],
        "central_top5": ranking(central)[:5],
        "spearman": round(spearman(federated, central), 4),
        "per_class_accuracy": {
            str(c["class"]): c["accuracy"] for c in last.metrics["explanation"]["per_class"]
        },
    }


def group_value_rows(section: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The demo table's rows for the card's ``group_value`` section: per valued round, each
    group (pods) with its value — the relative change of the held-out loss without it — and
    the accuracy change (> 0: it helped)."""
    rows = []
    for r in (section or {}).get("rounds", []):
        if r["valued_in_round"] is None:
            continue
        values = ", ".join(
            f"{g['label']}({g['pods']}) {g['value']:+.4f}"
            + (f"/{g['accuracy_change']:+.3f}" if g.get("accuracy_change") is not None else "")
            for g in r["groups"]
            if g["value"] is not None
        )
        left = f"; left out {r['left_out']}" if r["left_out"] else ""
        rows.append((f"group value, round {r['round']}", values + left))
    return rows


def plot_report(report: dict[str, Any], path: Path) -> None:
    """The demo's report.png: accuracy per round against the centralized and local-only
    baselines, federated against central feature importance, and each group's value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["accuracy_per_round"]
    explained = report.get("explanations") or {}
    valued = valued_rounds(report.get("group_value"))
    panels = 1 + bool(explained) + bool(valued)
    figure, all_axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), dpi=120)
    axes, *others = all_axes if panels > 1 else [all_axes]
    if explained:
        _plot_importance(others.pop(0), explained)
    if valued:
        values = others.pop(0)
        plot_group_values(values, report["group_value"])
        values.set_title("Group value (leave one group out, under the masks)")
    axes.plot(
        [p["round"] for p in points],
        [p["accuracy"] for p in points],
        marker="o",
        label="federated (SecAgg+)",
    )
    axes.axhline(report["centralized_accuracy"], color="tab:green", ls="--", label="centralized")
    axes.axhline(
        report["local_only_accuracy_mean"], color="tab:red", ls=":", label="local only (mean)"
    )
    axes.set_xlabel("round")
    axes.set_ylabel("accuracy on the held-out test split")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"{report['pods']} pods, {report['partition']}, {report['rounds']} rounds")
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _plot_importance(axes: Any, explained: dict[str, Any]) -> None:
    """Federated feature importance (from the masked sums) beside the central one on pooled
    data, for the ten features the federated figure ranks first."""
    federated, central = explained["federated_importance"], explained["central_importance"]
    names = sorted(federated, key=lambda n: -federated[n])[:10][::-1]
    where = np.arange(len(names))
    scale = max(federated.values()) / max(max(central.values()), 1e-12)
    axes.barh(where + 0.2, [federated[n] for n in names], 0.4, label="federated (masked sums)")
    axes.barh(where - 0.2, [central[n] * scale for n in names], 0.4, label="central, pooled")
    axes.set_yticks(where, names, fontsize="small")
    axes.set_xlabel("mean |attribution| (central rescaled to the federated maximum)")
    axes.set_title(
        f"Feature importance, model of round {explained['model_evaluated']} "
        f"(Spearman {explained['spearman']:.3f})"
    )
    axes.legend(loc="lower right", fontsize="small")
