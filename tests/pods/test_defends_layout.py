"""The pod encodes its input only by the plan's layout (:mod:`pods.agent.layout`).

A dishonest service that could state each pod's layout could single one pod out inside a
"cohort sum": every other pod told that the coordinates of the target's update carry a part
clamped to zero (or a coarser scale), the sum there is the target's own update. Each attack is
the first-stage message of a real round, tampered with, answered by the pod's real worker.
"""

from __future__ import annotations

from typing import Any

import pytest

from pods.agent.layout import LayoutRefused, check_layout, plan_layout
from tests.pods.test_defends import Pods, declined
from training.modelspec import validate_spec

pytestmark = pytest.mark.django_db(transaction=True)


def _segments(message: dict[str, Any]) -> list[list[Any]]:
    segments: list[list[Any]] = message["payload"]["layout"]["segments"]
    return segments


def test_the_service_states_the_plans_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    spec = validate_spec(message["task"]["spec"])
    assert message["payload"]["layout"] == plan_layout(spec, 4).to_dict()
    reply = worker.handle(message)
    assert reply is not None and reply["type"] == "round.reply"


def test_a_part_clamped_to_almost_nothing_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """The update's bound made tiny: this pod would add (almost) zero where the target adds
    its update."""
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    update = next(s for s in _segments(message) if s[0] == "update")
    update[2] = 1e-9
    assert declined(worker.handle(message)) == "layout_not_in_plan"
    assert worker.rounds == {}  # no key advertised


def test_a_coarser_or_finer_scale_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods(monkeypatch, 4)
    for change in (-8, 1):
        worker, message, _ = pods.one()
        for segment in _segments(message):
            segment[3] += change
        assert declined(worker.handle(message)) == "layout_not_in_plan"


def test_parts_moved_renamed_or_added_are_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods(monkeypatch, 4)
    tampers = [
        lambda s: s.reverse(),  # the update where the evaluation sums were
        lambda s: s[0].__setitem__(0, "spare"),
        lambda s: s.append(["value_loss", 1, 1e6, 4]),  # a candidate the task does not list
        lambda s: s.pop(),
    ]
    for tamper in tampers:
        worker, message, _ = pods.one()
        tamper(_segments(message))
        assert declined(worker.handle(message)) == "layout_not_in_plan"


def test_the_scale_of_any_cohort_size_the_plan_allows_is_accepted() -> None:
    from dataspace.demo import demo_request_spec

    spec = validate_spec(demo_request_spec(rounds=2, cohort_size=50, min_participants=4))
    for cohort in (4, 17, 50):
        stated = plan_layout(spec, cohort).to_dict()
        assert check_layout(stated, spec, candidates=0).to_dict() == stated
    with pytest.raises(LayoutRefused):  # far above its cohort: a coarser scale
        check_layout(plan_layout(spec, 10_000).to_dict(), spec, candidates=0)
    with pytest.raises(LayoutRefused):
        check_layout(plan_layout(spec, 4, candidates=2).to_dict(), spec, candidates=1)
    with pytest.raises(LayoutRefused):
        check_layout({"segments": "nope"}, spec, candidates=0)
