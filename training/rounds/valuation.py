"""Group value in the rounds engine (the pure rules: ``training.modelspec.valuation``).

* Opening a round: each participant's stable group slot, merged so no group is below the plan's
  minimum (:func:`round_groups`); the groups go to the SecAgg+ state, which gives each its own
  disjoint graph, and their labels to the round's metrics.
* Finishing round r: every group's unmasked sum, so the model without each group
  (:func:`training.modelspec.federated.candidate_vectors`) is stored as a candidate; round r+1's
  pods download the candidates with their task and add their evaluation sums for each.
* Finishing round r+1: each of round r's groups' value from those sums; in robust mode a group
  whose value is clearly negative is left out — the update is applied to the candidate without
  it (:func:`start_point`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound
from training.modelspec.spec import ModelSpec
from training.modelspec.valuation import Group, form_groups, group_slot, group_values, left_out

Totals = Mapping[str, npt.NDArray[np.float64]]


def round_groups(
    model_request: ModelRequest, spec: ModelSpec, participants: list[RoundParticipant]
) -> list[Group]:
    """The round's valued groups (fewer than two: the round is not split)."""
    if spec.valuation is None:
        return []
    slots = {
        p.index: group_slot(str(model_request.pk), str(p.pod_id), spec.valuation.groups)
        for p in participants
    }
    groups = form_groups(slots, spec.valuation.groups, spec.training.min_participants)
    return groups if len(groups) > 1 else []


def candidates_of(version: ModelVersion | None) -> list[dict[str, Any]]:
    """The candidate models a version was stored with: [{label, sha256}] in group order."""
    if version is None:
        return []
    return list(version.metrics.get("candidates", []))


def candidate_path(request_id: object, round_number: int, label: str) -> str:
    return f"candidates/{request_id}/round-{round_number}/without-{label}.safetensors"


def candidate_blob(version: ModelVersion, index: int) -> tuple[bytes, str] | None:
    """The ``index``-th candidate of a version (bytes, SHA-256), or None."""
    candidates = candidates_of(version)
    if not 0 <= index < len(candidates):
        return None
    entry = candidates[index]
    path = candidate_path(version.model_request_id, version.round_number, str(entry["label"]))
    if not default_storage.exists(path):
        return None
    with default_storage.open(path, "rb") as handle:
        return handle.read(), str(entry["sha256"])


def delete_candidates(version: ModelVersion) -> None:
    """Forget a version's candidates once the round that valued them completed (nothing reads
    them after it; a retry of that round happens only before it completes)."""
    for entry in candidates_of(version):
        path = candidate_path(version.model_request_id, version.round_number, str(entry["label"]))
        if default_storage.exists(path):
            default_storage.delete(path)


def forget_candidates(model_request_id: uuid.UUID) -> None:
    """Forget every candidate of a request that ended (failed, cancelled, or stopped before its
    last round): no round will value them, and they are derived from group sums."""
    for version in ModelVersion.objects.filter(model_request_id=model_request_id):
        delete_candidates(version)


def start_point(
    spec: ModelSpec, training_round: TrainingRound, totals: Totals
) -> tuple[bytes | None, dict[str, Any]]:
    """Value the groups of the round the base model came from, from this round's evaluation
    sums; in robust mode, the candidate to apply this round's update to (None: the base).
    Returns that candidate's weights and the metrics to record."""
    base = training_round.base_version
    candidates = candidates_of(base)
    if spec.valuation is None or base is None or not candidates or "value_loss" not in totals:
        return None, {}
    labels = [str(c["label"]) for c in candidates]
    classifier = spec.training.loss in ("cross_entropy", "bce_with_logits")
    values = group_values(totals, labels, classifier=classifier)
    dropped = left_out(values, spec.valuation.margin) if spec.valuation.robust else None
    record = {
        "valuation": {
            "of_round": base.round_number,
            "metric": "accuracy" if classifier else "loss",
            "values": [asdict(v) for v in values],
            "robust": spec.valuation.robust,
            "margin": spec.valuation.margin,
            "left_out": dropped,
        }
    }
    if dropped is None:
        return None, record
    found = candidate_blob(base, labels.index(dropped))
    if found is None or hashlib.sha256(found[0]).hexdigest() != found[1]:
        record["valuation"]["left_out"] = None  # the candidate is gone: keep the full model
        return None, record
    return found[0], record


def store_candidates(
    model_request: ModelRequest,
    training_round: TrainingRound,
    spec: ModelSpec,
    start: npt.NDArray[np.float32],
    optimizer_state: Mapping[str, npt.NDArray[np.float32]] | None,
    totals: Totals,
    group_totals: Sequence[tuple[str, int, Totals]],
    like: Mapping[str, Any],
) -> dict[str, Any]:
    """Round r's candidates (the model without each group), stored for round r+1's pods, and
    the metrics naming them; nothing when the round was not split or is the last."""
    import torch  # the model's tensors: torch only where a round finishes

    from training.modelspec import dump_weights, unflatten_state
    from training.modelspec.federated import candidate_vectors

    if spec.valuation is None or not group_totals:
        return {}
    groups = [{"label": label, "pods": pods} for label, pods, _ in group_totals]
    if len(group_totals) < 2 or training_round.number >= model_request.rounds:
        # One group left (the others fell below the minimum), or no next round to value them
        # in (the card says so): the groups are recorded, no candidate is stored.
        return {"groups": groups}
    vectors = candidate_vectors(
        spec, start, optimizer_state, totals, [t for _, _, t in group_totals]
    )
    candidates = []
    for (label, _pods, _t), vector in zip(group_totals, vectors, strict=True):
        state = unflatten_state(vector, spec, like=like)
        # Stored like the round's own model: floating tensors as float32.
        blob = dump_weights(
            {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
        )
        path = candidate_path(model_request.pk, training_round.number, label)
        if default_storage.exists(path):
            default_storage.delete(path)
        default_storage.save(path, ContentFile(blob))
        candidates.append({"label": label, "sha256": hashlib.sha256(blob).hexdigest()})
    return {"groups": groups, "candidates": candidates}
