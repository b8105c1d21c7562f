"""The label-flip benchmark's claim at a fixed seed (``make bench-groups``): the flipped group's
value is flagged negative, and robust mode's model beats plain FedAvg's."""

from __future__ import annotations

from dataspace.bench.groups import run


def test_the_flipped_group_is_flagged_and_robust_mode_beats_plain_fedavg() -> None:
    plain = run(pods=30, groups=3, minimum=4, rounds=6, robust=False, seed=0)
    robust = run(pods=30, groups=3, minimum=4, rounds=6, robust=True, seed=0)

    flipped = plain["flipped_group"]
    # Every group's sum covered at least the plan's minimum, every round.
    assert all(min(h["group_pods"]) >= 4 for h in plain["history"] + robust["history"])
    # The group value flags the flipped group (value below −margin) in plain FedAvg's rounds.
    assert plain["rounds_flipped_group_flagged"]
    # Robust mode leaves it out, and its model is clearly better.
    assert flipped in [h["left_out"] for h in robust["history"]]
    assert robust["final_accuracy"] >= plain["final_accuracy"] + 0.1
    # Plain mode never leaves anything out: its model is FedAvg's.
    assert all(h["left_out"] is None for h in plain["history"])
