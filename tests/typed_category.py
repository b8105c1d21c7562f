"""A category the tests make up: categorical + int + float + bool fields with missing values,
free text, and a bool label; a spec for it and synthetic records whose label the features
decide (so a model trained on more people's records does better)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

SLUG = "wellbeing.sleep_diary"
ACTIVITY = ["low", "medium", "high"]
FIELDS: list[dict[str, Any]] = [
    {
        "name": "activity",
        "type": "categorical",
        "unit": "",
        "description": "How active the day was.",
        "values": ACTIVITY,
        "encoding": "one_hot",
        "missing": {"fill": "medium"},
    },
    {
        "name": "age",
        "type": "int",
        "unit": "years",
        "description": "Age on the day.",
        "range": [18, 99],
        "missing": "drop",
    },
    {
        "name": "sleep_hours",
        "type": "float",
        "unit": "hours",
        "description": "Hours slept the night before.",
        "range": [0, 24],
        "missing": {"fill": 7.0},
    },
    {"name": "smoker", "type": "bool", "unit": "", "description": "Smokes.", "missing": "drop"},
    {"name": "diary", "type": "string", "unit": "", "description": "Free-text diary entry."},
    {"name": "rested", "type": "bool", "unit": "", "description": "Woke up rested."},
    {
        "name": "mood",
        "type": "int",
        "unit": "score",
        "description": "Mood score 0 to 9.",
        "range": [0, 9],
    },
    {
        "name": "day",
        "type": "date",
        "unit": "",
        "description": "The day.",
        "range": ["2020-01-01", "2030-12-31"],
    },
]
CATEGORY: dict[str, Any] = {
    "slug": SLUG,
    "title": "Sleep diary",
    "description": "A daily sleep diary. Health data.",
    "special_category": True,
    "fields": FIELDS,
}
FEATURES = ["activity", "age", "sleep_hours", "smoker"]
WIDTH = 6  # activity one-hot (3) + age + sleep_hours + smoker
MEAN = [0.33, 0.33, 0.33, 50.0, 7.0, 0.3]
STD = [0.47, 0.47, 0.47, 18.0, 1.5, 0.46]


def catalog_file(path: Path) -> Path:
    path.write_text(json.dumps([CATEGORY]), encoding="utf-8")
    return path


def sleep_spec(
    *,
    schema: bool = True,
    rounds: int = 4,
    cohort_size: int = 4,
    min_participants: int = 3,
    label: str = "rested",
    outputs: int = 2,
    features: list[str] | None = None,
    width: int = WIDTH,
    lr: float = 0.5,
) -> dict[str, Any]:
    features = features or FEATURES
    spec: dict[str, Any] = {
        "title": "Who wakes up rested",
        "purpose": "Learn which daily habits go with waking up rested.",
        "intended_use": "Suggest habits that may help a person wake up rested.",
        "out_of_scope_uses": ["Diagnosing a sleep disorder", "Decisions about a named person"],
        "data": {"category": SLUG, "features": features, "label": label},
        "model": {
            "layers": [
                *([{"type": "standardize", "mean": MEAN, "std": STD}] if width == WIDTH else []),
                {"type": "linear", "in_features": width, "out_features": 8},
                {"type": "relu"},
                {"type": "linear", "in_features": 8, "out_features": outputs},
            ]
        },
        "training": {
            "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "lr": lr},
            "local_epochs": 2,
            "batch_size": 16,
            "rounds": rounds,
            "cohort_size": cohort_size,
            "min_participants": min_participants,
        },
        "privacy": {"secagg_threshold": 0.6},
    }
    if schema:
        by_name = {f["name"]: f for f in FIELDS}
        spec["data"]["schema"] = [by_name[n] for n in [*features, label]]
    return spec


def records(n: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic diary days: rested mostly when sleep is long, the day active, no smoking."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        activity = ACTIVITY[int(rng.integers(0, 3))]
        age = int(rng.integers(18, 90))
        sleep = float(np.clip(rng.normal(7.0, 1.5), 0, 24))
        smoker = bool(rng.random() < 0.3)
        score = (
            1.6 * (sleep - 7.0)
            + {"low": -1.2, "medium": 0.0, "high": 1.2}[activity]
            - 1.2 * smoker
            + rng.normal(0, 0.3)
        )
        out.append(
            {
                "activity": activity,
                "age": age,
                "sleep_hours": round(sleep, 2),
                "smoker": smoker,
                "diary": f"day {i}, slept ok",
                "rested": bool(score > 0),
                "mood": int(rng.integers(0, 10)),
                "day": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
            }
        )
    return out


EXPORT_HEADER = ["Activity", "Age (years)", "Sleep", "Smoker", "Diary", "Rested", "Mood", "Day"]
EXPORT_MAP = [
    "Activity=activity",
    "Age (years)=age",
    "Sleep=sleep_hours",
    "Smoker=smoker",
    "Diary=diary",
    "Rested=rested",
    "Mood=mood",
    "Day=day",
]


def export_csv(rows: list[dict[str, Any]], *, blank_every: int = 7, delimiter: str = ";") -> str:
    """A spreadsheet export of the rows: its own column names, a delimiter, blank cells."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    for i, r in enumerate(rows):
        cells = [
            r["activity"],
            str(r["age"]),
            repr(r["sleep_hours"]),
            "yes" if r["smoker"] else "no",
            r["diary"],
            "yes" if r["rested"] else "no",
            str(r["mood"]),
            r["day"],
        ]
        if blank_every and i % blank_every == 3:
            cells[0] = ""  # activity: filled with "medium"
        if blank_every and i % blank_every == 5:
            cells[2] = ""  # sleep: filled with 7.0
        writer.writerow(cells)
    return out.getvalue()
