"""Records shaped like the bundled breast-screening category, from scikit-learn's copy on disk."""

from __future__ import annotations

import csv
import io

from sklearn.datasets import load_breast_cancer


def breast_csv(rows: int, start: int = 0) -> str:
    data = load_breast_cancer()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*data.feature_names, "diagnosis"])
    for features, label in zip(
        data.data[start : start + rows], data.target[start : start + rows], strict=True
    ):
        writer.writerow([*(f"{v:.6g}" for v in features), int(label)])
    return out.getvalue()
