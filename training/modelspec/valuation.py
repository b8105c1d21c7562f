"""Group-level value (issue 16): how much each group of a round's cohort helped the model.

When the plan's optional ``valuation`` section says so, a round's cohort is split into G groups
(each at least the plan's minimum participants), each aggregated under its own masks
(:func:`training.secagg.graph.grouped_neighbours`), so only group sums are revealed. The value of
a group is leave-one-group-out: after round r the service also computes the model it would have
published *without* that group (the same server step on Σ − S_g); the pods of round r+1
evaluate every such candidate on their held-out split, under the masks, beside the full model;
value_g = (mean loss without g − mean loss of the full model) / mean loss of the full model: the
relative change in the held-out loss (a proper scoring rule, finer than accuracy, which moves in
steps of one example and flagged honest groups by chance); the accuracy change is kept beside it
for classifiers.
A positive value: the group helped. In robust mode a group whose value is below −margin is
left out: round r+1's update is applied to the candidate without it, so round r's harmful
contribution leaves the model. No value is computed for one person: a group is never below
the plan's minimum, and the value is a difference of two cohort-level evaluation sums.

Known lag: round r's groups are valued in round r+1, so the last round's groups are not valued
(the card says so). Pure: no Django, no torch.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import SpecError

MAX_GROUPS = 20
DEFAULT_MARGIN = 0.002  # a 0.2 % rise of the held-out loss
LABELS = string.ascii_uppercase[:MAX_GROUPS]
LOSS_PER_EXAMPLE = 100.0  # the evaluation parts' bound, as for eval_loss


@dataclass(frozen=True)
class ValuationSpec:
    groups: int
    robust: bool = False
    margin: float = DEFAULT_MARGIN


def read_valuation(value: Any, *, cohort_size: int, min_participants: int) -> ValuationSpec | None:
    """The spec's ``valuation`` section, checked: G ≥ 2 groups, each able to hold the plan's
    minimum (cohort_size ≥ G × min_participants), a margin in [0, 1]."""
    if value is None:
        return None
    path = "valuation"
    if not isinstance(value, Mapping):
        raise SpecError("malformed_spec", "Must be an object.", path)
    unknown = set(value) - {"groups", "robust", "margin"}
    if unknown:
        raise SpecError("unknown_field", f"Unknown field {sorted(unknown)[0]!r}.", path)
    groups = value.get("groups")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 2 <= groups <= MAX_GROUPS:
        raise SpecError(
            "invalid_value",
            f"groups must be a whole number from 2 to {MAX_GROUPS}.",
            "valuation.groups",
        )
    if cohort_size < groups * min_participants:
        raise SpecError(
            "valuation_groups_too_small",
            f"{groups} groups of at least {min_participants} pods need a cohort of "
            f"{groups * min_participants}; the cohort size is {cohort_size}.",
            "valuation.groups",
        )
    robust = value.get("robust", False)
    if not isinstance(robust, bool):
        raise SpecError("invalid_value", "robust must be true or false.", "valuation.robust")
    margin = value.get("margin", DEFAULT_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 1:
        raise SpecError("invalid_value", "margin must be between 0 and 1.", "valuation.margin")
    return ValuationSpec(groups=groups, robust=robust, margin=float(margin))


# -- forming a round's groups ------------------------------------------------------------------


def group_slot(request_id: str, pod_id: str, groups: int) -> int:
    """A pod's stable group for one request: a hash keyed by the request, so that its group is
    the same every round (a group's values are comparable) and unrelated across requests."""
    digest = hashlib.sha256(f"dataspace-group\x00{request_id}\x00{pod_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % groups


@dataclass(frozen=True)
class Group:
    label: str  # "A", or "A+C" for merged slots
    members: list[int]  # the round's participant indices


def form_groups(slots: Mapping[int, int], groups: int, minimum: int) -> list[Group]:
    """The round's groups from each participant's slot: a slot with fewer than ``minimum``
    members is merged into the smallest other group until every group has at least
    ``minimum`` (never a group below it). One group back means the round is not split."""
    buckets: list[tuple[list[int], list[int]]] = [
        ([slot], sorted(u for u, s in slots.items() if s == slot)) for slot in range(groups)
    ]
    buckets = [b for b in buckets if b[1]]
    while len(buckets) > 1:
        buckets.sort(key=lambda b: (len(b[1]), b[0]))
        if len(buckets[0][1]) >= minimum:
            break
        (s1, m1), (s2, m2) = buckets[0], buckets[1]
        buckets = [(sorted(s1 + s2), sorted(m1 + m2)), *buckets[2:]]
    buckets.sort(key=lambda b: b[0])
    return [Group("+".join(LABELS[s] for s in slots_), members) for slots_, members in buckets]


# -- leave-one-group-out -----------------------------------------------------------------------

Totals = Mapping[str, npt.NDArray[np.float64]]


def totals_without(
    total: Mapping[str, npt.NDArray[np.floating[Any]]],
    group: Mapping[str, npt.NDArray[np.floating[Any]]],
) -> dict[str, npt.NDArray[np.float64]]:
    """The decoded sums of every group but one (the sums are linear)."""
    return {
        name: np.asarray(total[name], dtype=np.float64) - np.asarray(group[name], dtype=np.float64)
        for name in total
    }


def value_segments(candidates: int, max_examples: int) -> list[tuple[str, int, float]]:
    """The masked vector's parts for evaluating ``candidates`` models without one group each:
    the loss sum and the correct count per candidate on the pod's held-out split."""
    if candidates <= 0:
        return []
    cap = float(max_examples)
    return [
        ("value_loss", candidates, LOSS_PER_EXAMPLE * cap),
        ("value_correct", candidates, cap),
    ]


def value_parts(
    evaluations: Sequence[tuple[float, int]],
) -> dict[str, npt.NDArray[np.float64]]:
    """A pod's parts from its (loss sum, correct count) per candidate, in the task's order."""
    if not evaluations:
        return {}
    return {
        "value_loss": np.array([loss for loss, _ in evaluations], dtype=np.float64),
        "value_correct": np.array([float(c) for _, c in evaluations], dtype=np.float64),
    }


@dataclass(frozen=True)
class GroupValue:
    label: str
    value: float  # the relative loss change without the group: > 0 the group helped
    accuracy_change: float | None  # accuracy(full) − accuracy(without), classifiers only
    loss_change: float  # mean loss(without) − mean loss(full): > 0 the group helped


def group_values(totals: Totals, labels: Sequence[str], *, classifier: bool) -> list[GroupValue]:
    """Each group's value from the cohort's evaluation sums alone (full model and candidates on
    the same held-out examples): the relative change of the mean held-out loss when the group
    is left out."""
    examples = float(totals["eval_examples"][0])
    if not labels or examples <= 0:
        return []
    loss_full = float(totals["eval_loss"][0]) / examples
    acc_full = float(totals["eval_correct"][0]) / examples
    scale = loss_full if loss_full > 1e-12 else 1.0  # a perfect model: the absolute change
    out = []
    for i, label in enumerate(labels):
        loss_without = float(totals["value_loss"][i]) / examples
        acc_without = float(totals["value_correct"][i]) / examples
        loss_change = loss_without - loss_full
        out.append(
            GroupValue(
                label=label,
                value=round(loss_change / scale, 6),
                accuracy_change=round(acc_full - acc_without, 6) if classifier else None,
                loss_change=round(loss_change, 6),
            )
        )
    return out


def left_out(values: Sequence[GroupValue], margin: float) -> str | None:
    """Robust mode: the group to leave out — the most harmful one whose value is clearly
    negative (below −margin) — or None. One group at most:
    only the models without one group each were evaluated."""
    harmful = [v for v in values if v.value < -margin]
    if not harmful:
        return None
    return min(harmful, key=lambda v: v.value).label
