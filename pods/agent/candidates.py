"""Group value on the pod (``training.modelspec.valuation``): the candidate models of a task.

When the verified plan values groups, a round's task may list the last round's models without
one group each. The pod accepts them only as the plan allows (at most one per group, on the
pinned origin), downloads them and checks their SHA-256 and their tensors against the spec like
the weights (safetensors only), then evaluates each on its own held-out split; only the sums
(loss, correct count per candidate) leave the pod, masked with the rest of its vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from training.modelspec import load_weights
from training.modelspec.errors import SpecError
from training.modelspec.spec import ModelSpec

from .plan import PlanPrivacy
from .protocol import on_pinned_origin


class CandidateError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def candidate_list(task: Mapping[str, Any], plan: PlanPrivacy) -> list[Mapping[str, Any]]:
    """The task's candidates, checked against the verified plan."""
    listed = task.get("candidates")
    if listed is None:
        return []
    if not isinstance(listed, list) or not all(isinstance(c, Mapping) for c in listed):
        raise CandidateError("malformed_task")
    if listed and plan.groups == 0:
        raise CandidateError("groups_not_in_plan")
    if len(listed) > plan.groups:
        raise CandidateError("too_many_candidates")
    for entry in listed:
        url = entry.get("url")
        if not isinstance(url, str) or not on_pinned_origin(url):
            raise CandidateError("origin_not_pinned")
        if not isinstance(entry.get("sha256"), str):
            raise CandidateError("malformed_task")
    return listed


def load_candidates(
    task: Mapping[str, Any],
    spec: ModelSpec,
    plan: PlanPrivacy,
    download: Callable[[str], bytes],
) -> list[dict[str, torch.Tensor]]:
    """The candidates' states, in the task's order (the order of the masked parts)."""
    states = []
    for entry in candidate_list(task, plan):
        blob = download(str(entry["url"]))
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise CandidateError("candidate_mismatch")
        try:
            states.append(load_weights(blob, spec))
        except SpecError:
            raise CandidateError("candidate_mismatch") from None
    return states
