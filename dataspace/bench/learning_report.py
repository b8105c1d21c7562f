"""The learning bench's report: the chart of accuracy per round and the summary table, both
read from the JSON lines :func:`dataspace.bench.learning.run` writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dataspace.bench.learning_tasks import PARTITIONS


def plot(lines: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(
        {(x["dataset"], x["partition"], x["devices"]) for x in lines},
        key=lambda k: (
            k[0],
            k[2] != "uniform",
            PARTITIONS.index(k[1]) if k[1] in PARTITIONS else len(PARTITIONS),
            k[1],
        ),
    )
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=110)
    flat = np.atleast_1d(axes).ravel()
    for ax, key in zip(flat, panels, strict=False):
        group = [x for x in lines if (x["dataset"], x["partition"], x["devices"]) == key]
        for x in group:
            points = x["accuracy_per_round"]
            ax.plot(range(1, len(points) + 1), points, label=x["strategy"], lw=1.2)
        ax.axhline(group[0]["centralized_accuracy"], color="black", ls="--", lw=1)
        ax.axhline(
            group[0]["centralized_accuracy"] - group[0]["target_gap_points"] / 100,
            color="grey",
            ls=":",
            lw=1,
        )
        title = f"{key[0]}, {key[1]}" + ("" if key[2] == "uniform" else ",\nhalf the pods slow")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("round", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in flat[len(panels) :]:
        ax.axis("off")
    flat[0].set_ylabel("accuracy (held-out)", fontsize=8)
    flat[0].legend(fontsize=7, loc="lower right")
    figure.suptitle("Federated strategies: -- centralized, ··· target", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def table(lines: list[dict[str, Any]]) -> str:
    header = (
        f"{'dataset':<17}{'partition':<14}{'devices':<9}{'strategy':<11}{'acc':>7}"
        f"{'central':>8}{'local':>7}{'gap':>7}{'to target':>10}{'B/pod/rnd':>10}"
    )
    rows = [header]
    for x in lines:
        local = x["local_only_accuracy_mean"]
        rows.append(
            f"{x['dataset']:<17}{x['partition']:<14}"
            f"{'uniform' if x['devices'] == 'uniform' else 'hetero':<9}{x['strategy']:<11}"
            f"{x['accuracy'] if x['accuracy'] is not None else float('nan'):>7.3f}"
            f"{x['centralized_accuracy']:>8.3f}"
            f"{local if local is not None else float('nan'):>7.3f}{x['gap_points']:>7.1f}"
            f"{x['rounds_to_target'] if x['rounds_to_target'] else '-':>10}"
            f"{x['bytes_per_pod_round']:>10}"
        )
    return "\n".join(rows)
