"""SCAFFOLD's server half in the live rounds (Karimireddy et al. 2020, Algorithm 1).

The service keeps the server control variate c with each model version (a safetensors file,
never pickle; none for version 0: c = 0) and serves it to the next round's pods with the
weights. Each pod adds Δc_i to the same masked vector as its update (the ``control_delta``
part), so the service learns only Σ_{i∈S} Δc_i over the survivors S, and steps

    c ← c + (|S| / N) · mean_{i∈S} Δc_i = c + Σ_{i∈S} Δc_i / N.

N is the population the round's cohort was drawn from: the eligible pods when it opened
(``cohort_size / sample_rate``; equal to the cohort when every eligible pod was drawn). It is
what the service knows without learning who took part beyond the survivor set, and with it c
stays the mean of the pods' c_i (a pod not drawn keeps its c_i, a pod new to the request
starts at 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from django.core.files.base import ContentFile

from training.models import ModelVersion, TrainingRound
from training.modelspec.server_optim import scaffold_server_control
from training.modelspec.spec import ModelSpec
from training.modelspec.vectors import control_bytes, control_from_bytes

Vector = npt.NDArray[np.float32]


def runs_scaffold(spec: ModelSpec) -> bool:
    return spec.training.algorithm.get("type") == "scaffold"


def control_of(version: ModelVersion, dim: int) -> Vector | None:
    """The c a version was produced with (``None``: c = 0, the first round)."""
    if not version.control:
        return None
    with version.control.open("rb") as handle:
        return control_from_bytes(handle.read(), dim)


def population(training_round: TrainingRound) -> int:
    """N: the eligible pods the round's cohort was drawn from (at least the cohort)."""
    cohort = int(training_round.cohort_size)
    rate = float(training_round.metrics.get("sample_rate") or 1.0)
    return max(cohort, round(cohort / rate)) if rate > 0 else cohort


def attach_control(
    version: ModelVersion,
    training_round: TrainingRound,
    spec: ModelSpec,
    totals: Mapping[str, npt.NDArray[np.float64]],
) -> None:
    """Step c from the masked total of the survivors' Δc_i and store it with the new version
    (before it is saved). Nothing to do unless the request runs SCAFFOLD."""
    if not runs_scaffold(spec):
        return
    base = training_round.base_version
    assert base is not None, "a round always starts from a model version"
    delta_sum = np.asarray(totals["control_delta"], dtype=np.float64)
    control = scaffold_server_control(
        control_of(base, delta_sum.shape[0]), delta_sum, population(training_round)
    )
    blob = control_bytes(control)
    version.control_sha256 = hashlib.sha256(blob).hexdigest()
    version.control.save(
        f"round-{training_round.number}-control.safetensors", ContentFile(blob), save=False
    )
