"""The model card as a readable HTML page: the signed JSON's figures in tables, and plots drawn
on the server (matplotlib, inline PNG; no script runs in the page)."""

from __future__ import annotations

import base64
import io
import json
import math
from typing import Any

from django.template.loader import render_to_string

from training.modelspec.explain import ranking

TOP = 12  # features shown in the importance chart and table


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(card: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    rounds = card["evaluation"]["rounds"]
    if rounds:
        figure, axes = plt.subplots(figsize=(6.4, 3.2))
        xs = [r["model_evaluated"] for r in rounds]
        axes.plot(xs, [r["accuracy"] for r in rounds], marker="o", label="accuracy")
        for k in sorted({c["class"] for r in rounds for c in r["per_class"]}):
            ys = [
                next((c["accuracy"] for c in r["per_class"] if c["class"] == k), None)
                for r in rounds
            ]
            axes.plot(xs, [math.nan if v is None else v for v in ys], ls="--", label=f"class {k}")
        axes.set_xlabel("model after round")
        axes.set_ylabel("federated accuracy")
        axes.set_ylim(0, 1)
        axes.legend(loc="lower right", fontsize="small")
        plots["evaluation"] = _png(figure)
        plt.close(figure)
    explained = card["explanations"]["rounds"]
    if explained:
        last = explained[-1]["feature_importance"]
        names = ranking(last)[:TOP][::-1]
        figure, axes = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1))
        axes.barh(names, [last[n] for n in names], color="tab:blue")
        axes.set_xlabel("mean |attribution| (logit units)")
        axes.set_title(f"Feature importance, model of round {explained[-1]['round'] - 1}")
        plots["importance"] = _png(figure)
        plt.close(figure)
        figure, axes = plt.subplots(figsize=(6.4, 3.2))
        for name in ranking(last)[:5]:
            axes.plot(
                [r["round"] - 1 for r in explained],
                [r["feature_importance"][name] for r in explained],
                marker=".",
                label=name,
            )
        axes.set_xlabel("model after round")
        axes.set_ylabel("mean |attribution|")
        axes.legend(fontsize="small")
        plots["importance_rounds"] = _png(figure)
        plt.close(figure)
    if valued_rounds(card.get("group_value")):
        figure, axes = plt.subplots(figsize=(6.4, 3.2))
        plot_group_values(axes, card["group_value"])
        plots["group_value"] = _png(figure)
        plt.close(figure)
    return plots


def valued_rounds(section: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rounds of a card's ``group_value`` section whose groups were valued."""
    return [r for r in (section or {}).get("rounds", []) if r["valued_in_round"]]


def plot_group_values(axes: Any, section: dict[str, Any]) -> None:
    """Each group's value per valued round (> 0: the group helped), and the rounds robust mode
    left a group out of: the card's chart, and the demo report's."""
    valued = valued_rounds(section)
    labels = sorted({g["label"] for r in valued for g in r["groups"]})
    for label in labels:
        points = [
            (r["round"], g["value"])
            for r in valued
            for g in r["groups"]
            if g["label"] == label and g["value"] is not None
        ]
        axes.plot([x for x, _ in points], [v for _, v in points], marker="o", label=label)
    for r in valued:
        if r["left_out"]:
            axes.axvline(r["round"], color="tab:red", ls=":", lw=1)
    axes.axhline(0.0, color="grey", lw=0.8)
    axes.set_xlabel("round whose groups were valued")
    axes.set_ylabel("group value (> 0: it helped)")
    axes.legend(fontsize="small", title="group")


def card_context(signed: dict[str, Any]) -> dict[str, Any]:
    """The template context of the card's page (``training/model_card_body.html``)."""
    card = signed["card"]
    explained = card["explanations"]["rounds"]
    last = explained[-1]["feature_importance"] if explained else {}
    top = [(n, last[n]) for n in ranking(last)[:TOP]]
    classes = sorted(explained[-1]["per_class"]) if explained else []
    per_class_rows = [(n, [explained[-1]["per_class"][k].get(n) for k in classes]) for n, _ in top]
    return {
        "card": card,
        "signature": signed["signature"],
        "plots": _plots(card),
        "top": top,
        "classes": classes,
        "per_class_rows": per_class_rows,
        "card_json": json.dumps(signed, indent=2, ensure_ascii=False),
    }


def card_html(signed: dict[str, Any]) -> str:
    """A standalone page (the provider API's ``model-card.html``)."""
    return render_to_string("training/model_card.html", card_context(signed))
