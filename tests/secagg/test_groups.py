"""Valued groups (issue 16): one SecAgg+ round, a disjoint Harary graph per group, so that each
group's sum is revealed on its own — and never a sum of fewer pods than the plan's minimum."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.secagg.helpers import parts_for, quantized_sum
from training.secagg import graph
from training.secagg.client import ClientRound, Floors
from training.secagg.encoding import Layout
from training.secagg.errors import AbortError, FloorError
from training.secagg.server import ServerRound
from training.secagg.simulate import simulate_round
from training.secagg.wire import Stage

STAGES = [Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK]
LATE = (Stage.CONSISTENCY_CHECK, Stage.UNMASK)


def layout(dim: int) -> Layout:
    return Layout.for_training(model_dim=dim, max_clients=60, clip_norm=1.0, max_weight=10)


def split(n: int, g: int) -> list[list[int]]:
    return [[u for u in range(1, n + 1) if u % g == position] for position in range(g)]


def test_the_grouped_graph_has_no_edge_between_groups() -> None:
    groups = split(40, 3)
    neighbours, kt = graph.grouped_neighbours(groups, 0.6, b"seed")
    where = {u: p for p, g in enumerate(groups) for u in g}
    for u, vs in neighbours.items():
        assert vs and all(where[v] == where[u] for v in vs)
        assert all(u in neighbours[v] for v in vs)  # symmetric
    assert [k for k, _ in kt] == [min(graph.choose_k(len(g)), len(g) - 1) for g in groups]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 3), st.integers(4, 7), st.integers(1, 12), st.integers(0, 10_000), st.data())
def test_each_group_sum_equals_its_plain_sum_under_any_tolerable_dropout(
    g: int, size: int, dim: int, seed: int, data: st.DataObject
) -> None:
    groups = split(g * size, g)
    minimum = 3
    drop: dict[int, Stage] = {}
    for members in groups:
        t = graph.choose_t(len(members) - 1, 0.6)
        # Dropping up to (size - 1 - t) pods keeps every group unmaskable.
        lost = data.draw(st.lists(st.sampled_from(members), unique=True, max_size=size - 1 - t))
        for u in lost:
            drop[u] = data.draw(st.sampled_from(STAGES))
    rng = np.random.default_rng(seed)
    inputs = {u: parts_for(rng, dim) for u in range(1, g * size + 1)}

    floors = Floors(min_survivors=minimum, threshold_fraction=0.6, grouped=True)
    result = simulate_round(
        inputs,
        layout(dim),
        drop=drop,
        seed=seed,
        groups=groups,
        min_survivors=minimum,
        floors=floors,
    )

    summed = [u for u in inputs if u not in drop or drop[u] in LATE]
    for members, total in zip(result.groups, result.group_totals, strict=True):
        assert len(members) >= minimum
        assert np.array_equal(total, quantized_sum(inputs, members, layout(dim), seed))
    # Groups below the minimum are left out whole; the others are all there.
    kept = [
        [u for u in members if u in summed]
        for members in groups
        if len([u for u in members if u in summed]) >= minimum
    ]
    assert result.groups == kept
    assert np.array_equal(
        result.total, quantized_sum(inputs, sorted(u for m in kept for u in m), layout(dim), seed)
    )


def test_a_group_below_the_minimum_is_left_out_and_the_others_go_on() -> None:
    groups = split(15, 3)  # three groups of five
    rng = np.random.default_rng(1)
    inputs = {u: parts_for(rng, 4) for u in range(1, 16)}
    small = groups[0][:3]  # three of group 0 drop: two left, below the minimum of four
    result = simulate_round(
        inputs,
        layout(4),
        drop={u: Stage.MASKED_INPUT for u in small},
        groups=groups,
        min_survivors=4,
        seed=1,
        floors=Floors(min_survivors=4, threshold_fraction=0.6, grouped=True),
    )
    assert result.groups == groups[1:]
    assert not set(groups[0]) & set(result.survivors)


def test_nothing_left_above_the_minimum_aborts() -> None:
    groups = split(10, 2)
    rng = np.random.default_rng(2)
    inputs = {u: parts_for(rng, 4) for u in range(1, 11)}
    drop = {u: Stage.MASKED_INPUT for g in groups for u in g[:2]}
    with pytest.raises(AbortError):
        simulate_round(
            inputs,
            layout(4),
            drop=drop,
            groups=groups,
            min_survivors=4,
            seed=2,
            floors=Floors(min_survivors=4, threshold_fraction=0.6, grouped=True),
        )


def test_the_service_refuses_a_group_below_the_minimum() -> None:
    ids = {u: Ed25519PrivateKey.generate().public_key().public_bytes_raw() for u in range(1, 8)}
    with pytest.raises(AbortError):
        ServerRound(
            round_id="r",
            identity_keys=ids,
            threshold_fraction=0.6,
            min_survivors=4,
            layout=layout(2),
            groups=[[1, 2, 3], [4, 5, 6, 7]],
        )


# -- the pod defends itself against a dishonest service ------------------------------------------

GROUPED = Floors(min_neighbours=2, threshold_fraction=0.6, min_survivors=4, grouped=True)


def _advertise(floors: Floors, **message: object) -> None:
    pod = ClientRound(Ed25519PrivateKey.generate(), floors=floors)
    pod.advertise_keys(
        {
            "stage": Stage.ADVERTISE_KEYS.value,
            "round_id": "r",
            "index": 1,
            "neighbours": [2, 3, 4],
            "threshold": 2,
            "layout": layout(2).to_dict(),
            **message,
        }
    )


def test_the_pod_refuses_a_group_below_the_plan_minimum() -> None:
    with pytest.raises(FloorError) as refused:
        _advertise(GROUPED, group=[1, 2, 3])
    assert refused.value.code in ("group_below_plan", "neighbour_outside_group")
    with pytest.raises(FloorError) as refused:
        _advertise(GROUPED, neighbours=[2, 3], group=[1, 2, 3])
    assert refused.value.code == "group_below_plan"


def test_the_pod_refuses_a_neighbour_outside_its_group() -> None:
    with pytest.raises(FloorError) as refused:
        _advertise(GROUPED, group=[1, 2, 3, 5, 6])
    assert refused.value.code == "neighbour_outside_group"


def test_the_pod_refuses_groups_its_plan_does_not_state() -> None:
    with pytest.raises(FloorError) as refused:
        _advertise(Floors(), group=[1, 2, 3, 4])
    assert refused.value.code == "groups_not_in_plan"


class _Run:
    """A grouped round run by hand, so a test can lie to the pods at the consistency check."""

    def __init__(self, floors: Floors, groups: list[list[int]] | None, n: int) -> None:
        self.ids = {u: Ed25519PrivateKey.generate() for u in range(1, n + 1)}
        self.server = ServerRound(
            round_id="r-g",
            identity_keys={u: k.public_key().public_bytes_raw() for u, k in self.ids.items()},
            threshold_fraction=0.6,
            min_survivors=2,  # a dishonest service: it ignores the plan's minimum
            layout=layout(2),
            seed=b"s",
            groups=groups,
        )
        self.pods = {u: ClientRound(k, floors=floors) for u, k in self.ids.items()}
        for u, pod in self.pods.items():
            self.server.receive_advert(u, pod.advertise_keys(self.server.advertise_request(u)))
        self.server.close_advertise()
        for u, pod in self.pods.items():
            self.server.receive_shares(u, pod.share_keys(self.server.share_request(u)))
        self.server.close_share()
        rng = np.random.default_rng(0)
        for u, pod in self.pods.items():
            pod.masked_input(self.server.masked_request(u), parts_for(rng, 2))
            self.server.receive_masked(u)
        self.server.close_masked()


def test_the_pod_refuses_to_sign_a_group_survivor_set_below_the_minimum() -> None:
    """The service says most of pod 1's group dropped, to reveal a sum of few pods: pod 1
    refuses to sign, so it reveals no share."""
    groups = split(12, 2)  # [2,4,...,12] and [1,3,...,11]
    run = _Run(GROUPED, groups, 12)
    mine = next(g for g in groups if 1 in g)
    lie = {"stage": Stage.CONSISTENCY_CHECK.value, "survivors": sorted([*mine[:3], *groups[0]])}
    with pytest.raises(FloorError) as refused:
        run.pods[1].consistency_check(lie)
    assert refused.value.code == "group_survivors_below_plan"
    assert run.pods[1].stage is Stage.ABORTED


def test_an_ungrouped_pod_refuses_a_survivor_set_below_the_plan_minimum() -> None:
    floors = Floors(min_neighbours=2, threshold_fraction=0.6, min_survivors=5)
    run = _Run(floors, None, 6)
    lie = {"stage": Stage.CONSISTENCY_CHECK.value, "survivors": [1, 2, 3, 4]}
    with pytest.raises(FloorError) as refused:
        run.pods[1].consistency_check(lie)
    assert refused.value.code == "survivors_below_plan"
    honest = {"stage": Stage.CONSISTENCY_CHECK.value, "survivors": [1, 2, 3, 4, 5, 6]}
    run2 = _Run(floors, None, 6)
    assert "signature" in run2.pods[1].consistency_check(honest)


def test_grouped_state_survives_json() -> None:
    run = _Run(GROUPED, split(8, 2), 8)
    again = ServerRound.from_dict(run.server.to_dict())
    assert again.groups == run.server.groups
    assert again.group_kt == run.server.group_kt
    assert again.threshold_of(3) == run.server.threshold_of(3)


def test_a_group_that_cannot_be_unmasked_is_left_out_and_the_others_are_summed() -> None:
    """Too few of a group's pods answer the unmasking (fewer than its t): that group's sum
    cannot be revealed, so it is left out; the other groups' sums are exact."""
    groups = split(15, 3)  # three groups of five: k = 4, t = 3
    rng = np.random.default_rng(4)
    inputs = {u: parts_for(rng, 3) for u in range(1, 16)}
    lost = {u: Stage.UNMASK for u in groups[1][:3]}  # two of group 1 answer: below its t
    result = simulate_round(
        inputs,
        layout(3),
        drop=lost,
        groups=groups,
        min_survivors=4,
        seed=4,
        floors=Floors(min_survivors=4, threshold_fraction=0.6, grouped=True),
    )
    assert result.groups == [groups[0], groups[2]] and result.positions == [0, 2]
    for members, total in zip(result.groups, result.group_totals, strict=True):
        assert np.array_equal(total, quantized_sum(inputs, members, layout(3), 4))


# -- the pod recomputes its neighbourhood from the stated graph ----------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.integers(0, 2**32), st.booleans())
def test_one_pods_neighbourhood_is_the_graphs(n: int, seed: int, grouped: bool) -> None:
    indices = list(range(1, n + 1))
    k = graph.choose_k(max(n, 2))
    raw = seed.to_bytes(8, "big")
    full = graph.neighbours(indices, k, raw)
    assert all(graph.neighbours_of(indices, k, raw, u) == full[u] for u in indices)


def _server(groups: list[list[int]] | None, n: int) -> ServerRound:
    return ServerRound(
        round_id="r-graph",
        identity_keys={
            u: Ed25519PrivateKey.generate().public_key().public_bytes_raw() for u in range(1, n + 1)
        },
        threshold_fraction=0.6,
        min_survivors=4,
        layout=layout(2),
        groups=groups,
    )


@pytest.mark.parametrize(
    "groups", [None, [[1, 3, 5, 7, 9, 11, 13, 15, 17, 19], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]]]
)
def test_the_pod_accepts_the_graph_as_stated(groups: list[list[int]] | None) -> None:
    server = _server(groups, 20)
    floors = Floors(min_survivors=4, threshold_fraction=0.6, grouped=groups is not None)
    for u in range(1, 21):
        ClientRound(Ed25519PrivateKey.generate(), floors=floors).advertise_keys(
            server.advertise_request(u)
        )


def test_the_pod_refuses_a_neighbourhood_the_stated_graph_does_not_give() -> None:
    """A service that swaps one neighbour (e.g. to close a small piece of the graph) while
    stating the honest graph: the pod recomputes its neighbourhood and declines."""
    server = _server(None, 30)
    floors = Floors(min_survivors=4, threshold_fraction=0.6)
    message = server.advertise_request(1)
    stranger = next(v for v in range(2, 31) if v not in message["neighbours"])
    message["neighbours"] = [*message["neighbours"][1:], stranger]
    with pytest.raises(FloorError) as refused:
        ClientRound(Ed25519PrivateKey.generate(), floors=floors).advertise_keys(message)
    assert refused.value.code == "graph_not_as_stated"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda g: None, "graph_not_stated"),
        (lambda g: {**g, "seed": "AAAAAAAAAAAAAAAAAAAAAA=="}, "graph_not_as_stated"),
        (lambda g: {**g, "members": g["members"][:-1]}, "graph_not_as_stated"),
        (lambda g: {**g, "members": g["members"][:3]}, "graph_below_plan"),
    ],
)
def test_the_pod_refuses_a_graph_not_as_stated(change: Any, code: str) -> None:
    """Every pod the altered statement does not give the neighbourhood it was sent refuses,
    and the alteration reaches at least one pod. (Not "pod 1 refuses": a ring drawn over other
    members can give one pod the same neighbours by chance — about 3 % for pod 1 with one
    member left out — and that pod then rightly accepts.)"""
    server = _server(None, 30)
    reached = 0
    for u in range(1, 30):
        message = server.advertise_request(u)
        stated = message["graph"] = change(message["graph"])
        if stated is not None and len(stated["members"]) == 3:
            stated["members"] = [u, *[v for v in stated["members"] if v != u][:2]]
        if stated is not None and len(stated["members"]) >= 4:
            seed = base64.b64decode(stated["seed"])
            expected = graph.neighbours_of(stated["members"], stated["k"], seed, u)
            if expected == sorted(message["neighbours"]):
                continue  # this pod's neighbourhood is what the statement gives it
        reached += 1
        with pytest.raises(FloorError) as refused:
            ClientRound(
                Ed25519PrivateKey.generate(),
                floors=Floors(min_survivors=4, threshold_fraction=0.6),
            ).advertise_keys(message)
        assert refused.value.code == code
    assert reached > 0


def test_survivors_outside_the_stated_graph_cover_no_one() -> None:
    """The service pads the survivor set with indices that were never in the round, so that a
    sum of four looks like one of seven: the pod counts only its graph's members."""
    floors = Floors(min_neighbours=2, threshold_fraction=0.6, min_survivors=5)
    run = _Run(floors, None, 6)
    lie = {"stage": Stage.CONSISTENCY_CHECK.value, "survivors": [1, 2, 3, 4, 97, 98, 99]}
    with pytest.raises(FloorError) as refused:
        run.pods[1].consistency_check(lie)
    assert refused.value.code == "survivors_below_plan"
    assert run.pods[1].stage is Stage.ABORTED


def test_a_neighbour_that_never_shared_keys_is_no_survivor() -> None:
    """A neighbour dropped before sharing keys (so no one masked with it) is listed as a
    survivor, to make a small sum look big enough: the pod refuses to sign."""
    floors = Floors(min_neighbours=2, threshold_fraction=0.6, min_survivors=5)
    run = _Run(floors, None, 6)
    pod = run.pods[1]
    silent = pod.neighbours[0]
    pod._maskers.remove(silent)  # as if its shares never came
    del pod._held[silent]
    lie = {"stage": Stage.CONSISTENCY_CHECK.value, "survivors": [1, 2, 3, 4, 5, 6]}
    with pytest.raises(FloorError) as refused:
        pod.consistency_check(lie)
    assert refused.value.code == "survivors_inconsistent"
