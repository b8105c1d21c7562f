"""The pod's side of group value: candidate models are taken only as the verified plan allows,
and only with the SHA-256 the task names (``pods/agent/candidates.py``)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from dataspace.demo import demo_request_spec, demo_weights
from pods.agent.candidates import CandidateError, load_candidates
from pods.agent.plan import PlanPrivacy
from training.modelspec import validate_spec


def _plan(groups: int | None) -> tuple[Any, PlanPrivacy]:
    spec = demo_request_spec(rounds=2, cohort_size=8, min_participants=4)
    if groups:
        spec["valuation"] = {"groups": groups}
    parsed = validate_spec(spec)
    return parsed, PlanPrivacy.of(parsed)


def _task(blobs: list[bytes], url: str = "/api/v1/pod/rounds/1/candidates/{i}") -> dict[str, Any]:
    return {
        "candidates": [
            {"label": "ABC"[i], "url": url.format(i=i), "sha256": hashlib.sha256(b).hexdigest()}
            for i, b in enumerate(blobs)
        ]
    }


def test_candidates_of_a_grouped_plan_are_loaded_in_order() -> None:
    spec, plan = _plan(2)
    blobs = [demo_weights(demo_request_spec(rounds=2), seed=s) for s in (1, 2)]
    served = {f"/api/v1/pod/rounds/1/candidates/{i}": b for i, b in enumerate(blobs)}
    states = load_candidates(_task(blobs), spec, plan, served.__getitem__)
    assert len(states) == 2
    assert not all((states[0][k] == states[1][k]).all() for k in states[0])
    assert plan.floors().grouped and plan.floors().min_survivors == 4


@pytest.mark.parametrize(
    ("groups", "count", "url", "tamper", "code"),
    [
        (None, 1, "/api/v1/pod/rounds/1/candidates/{i}", False, "groups_not_in_plan"),
        (2, 3, "/api/v1/pod/rounds/1/candidates/{i}", False, "too_many_candidates"),
        (2, 1, "https://elsewhere.example/c/{i}", False, "origin_not_pinned"),
        (2, 1, "/api/v1/pod/rounds/1/candidates/{i}", True, "candidate_mismatch"),
    ],
)
def test_candidates_the_plan_does_not_allow_are_refused(
    groups: int | None, count: int, url: str, tamper: bool, code: str
) -> None:
    spec, plan = _plan(groups)
    blob = demo_weights(demo_request_spec(rounds=2))
    task = _task([blob] * count, url)

    def download(_path: str) -> bytes:
        return blob + (b"x" if tamper else b"")

    with pytest.raises(CandidateError) as refused:
        load_candidates(task, spec, plan, download)
    assert refused.value.code == code


def test_a_candidate_with_its_hash_but_not_the_plans_tensors_is_refused() -> None:
    """The SHA-256 only names the file: a file the service names correctly but whose tensors
    do not fit the verified spec (another model) is refused like the weights would be."""
    spec, plan = _plan(2)
    blob = demo_weights(demo_request_spec(rounds=2, hidden=17))  # the plan's has 16 units
    with pytest.raises(CandidateError) as refused:
        load_candidates(_task([blob]), spec, plan, lambda _path: blob)
    assert refused.value.code == "candidate_mismatch"
