"""Group value (issue 16): the plan's valuation section, forming groups (never one below the
plan's minimum), leave-one-group-out candidates, values and the robust choice."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.demo import demo_request_spec
from training.modelspec import validate_spec
from training.modelspec.errors import SpecError
from training.modelspec.federated import average_update, candidate_vectors
from training.modelspec.valuation import (
    form_groups,
    group_slot,
    group_values,
    left_out,
    read_valuation,
)


def spec_with(valuation: Any, cohort: int = 12, minimum: int = 4) -> dict[str, Any]:
    spec = copy.deepcopy(demo_request_spec(rounds=3, cohort_size=cohort, min_participants=minimum))
    spec["valuation"] = valuation
    return spec


def test_a_valid_section_is_part_of_the_spec() -> None:
    parsed = validate_spec(spec_with({"groups": 3, "robust": True, "margin": 0.05}))
    assert parsed.valuation is not None
    assert (parsed.valuation.groups, parsed.valuation.robust, parsed.valuation.margin) == (
        3,
        True,
        0.05,
    )
    assert validate_spec(demo_request_spec(rounds=3)).valuation is None


@pytest.mark.parametrize(
    ("valuation", "code", "field"),
    [
        ({"groups": 1}, "invalid_value", "valuation.groups"),
        ({"groups": 21}, "invalid_value", "valuation.groups"),
        ({"groups": True}, "invalid_value", "valuation.groups"),
        ({"groups": 4}, "valuation_groups_too_small", "valuation.groups"),  # 4 × 4 > 12
        ({"groups": 2, "robust": "yes"}, "invalid_value", "valuation.robust"),
        ({"groups": 2, "margin": -0.1}, "invalid_value", "valuation.margin"),
        ({"groups": 2, "shapley": True}, "unknown_field", "valuation"),
        ([2], "malformed_spec", "valuation"),
    ],
)
def test_a_bad_section_is_refused_with_a_stable_code(valuation: Any, code: str, field: str) -> None:
    with pytest.raises(SpecError) as refused:
        validate_spec(spec_with(valuation))
    assert (refused.value.code, refused.value.field) == (code, field)


def test_the_section_changes_the_plan_hash() -> None:
    from pods.agent.protocol import plan_hash

    plain = spec_with(None)
    del plain["valuation"]
    grouped = spec_with({"groups": 2})
    assert plan_hash(plain, "w", "n") != plan_hash(grouped, "w", "n")


def test_a_pods_slot_is_stable_per_request_and_spread() -> None:
    assert group_slot("r1", "pod-a", 3) == group_slot("r1", "pod-a", 3)
    slots = [group_slot("r1", f"pod-{i}", 3) for i in range(300)]
    assert all(60 < slots.count(s) < 140 for s in range(3))
    other = [group_slot("r2", f"pod-{i}", 3) for i in range(300)]
    assert slots != other


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 6),
    st.integers(2, 8),
    st.lists(st.integers(0, 5), min_size=2, max_size=60),
)
def test_groups_never_fall_below_the_minimum(groups: int, minimum: int, raw: list[int]) -> None:
    slots = {u: s % groups for u, s in enumerate(raw, start=1)}
    formed = form_groups(slots, groups, minimum)
    members = sorted(u for g in formed for u in g.members)
    assert members == sorted(slots)  # a partition of the cohort
    if len(formed) > 1:
        assert all(len(g.members) >= minimum for g in formed)
    labels = [g.label for g in formed]
    assert len(set(labels)) == len(labels)


def test_a_small_slot_is_merged_and_its_label_says_so() -> None:
    # B (one pod) joins the smallest other group, A; C keeps its own.
    slots = {1: 0, 2: 0, 3: 0, 4: 1, 5: 2, 6: 2, 7: 2, 8: 2}
    formed = form_groups(slots, 3, 3)
    assert [(g.label, g.members) for g in formed] == [("A+B", [1, 2, 3, 4]), ("C", [5, 6, 7, 8])]
    # Too few for two groups: one group, the round is not split.
    assert len(form_groups({1: 0, 2: 0, 3: 1, 4: 1, 5: 1}, 2, 3)) == 1


def test_candidates_are_the_server_step_on_the_other_groups_sums() -> None:
    spec = validate_spec(spec_with({"groups": 2}))
    rng = np.random.default_rng(0)
    dim = 5
    groups = [{"update": rng.normal(size=dim), "weight": np.array([w])} for w in (2.0, 3.0)]
    total = {k: groups[0][k] + groups[1][k] for k in groups[0]}
    base = rng.normal(size=dim).astype(np.float32)
    without = candidate_vectors(spec, base, None, total, groups)
    assert np.allclose(without[0], base + groups[1]["update"] / 3.0, atol=1e-6)
    assert np.allclose(without[1], base + groups[0]["update"] / 2.0, atol=1e-6)
    assert np.allclose(average_update(spec, total), total["update"] / 5.0)


def totals(
    correct: float, loss: float, value_correct: list[float], value_loss: list[float]
) -> dict[str, np.ndarray]:
    return {
        "eval_examples": np.array([100.0]),
        "eval_correct": np.array([correct]),
        "eval_loss": np.array([loss]),
        "value_correct": np.array(value_correct),
        "value_loss": np.array(value_loss),
    }


def test_values_and_the_robust_choice() -> None:
    sums = totals(80, 50, [90, 79, 75], [40, 52, 60])
    values = group_values(sums, ["A", "B", "C"], classifier=True)
    # The relative change of the mean held-out loss (0.5) when each group is left out.
    assert [v.value for v in values] == pytest.approx([-0.20, 0.04, 0.20])
    assert [v.loss_change for v in values] == pytest.approx([-0.10, 0.02, 0.10])
    assert [v.accuracy_change for v in values] == pytest.approx([-0.10, 0.01, 0.05])
    assert left_out(values, 0.02) == "A"
    assert left_out(values, 0.25) is None  # not clearly negative
    regression = group_values(sums, ["A", "B", "C"], classifier=False)
    assert [v.value for v in regression] == pytest.approx([-0.20, 0.04, 0.20])
    assert regression[0].accuracy_change is None


def test_a_perfect_model_is_valued_by_the_absolute_loss_change() -> None:
    values = group_values(totals(100, 0, [100], [3]), ["A"], classifier=True)
    assert values[0].value == pytest.approx(0.03)


def test_read_valuation_absent_is_none() -> None:
    assert read_valuation(None, cohort_size=4, min_participants=2) is None
