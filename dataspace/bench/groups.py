"""``make bench-groups``: group-level value flags a group of label-flipped pods, and robust mode
leaves it out (issue 16).

One group of pods (those whose stable group slot is 0) holds label-flipped records (class c
taught as c + 1). Two federations run from the same start, the same data and seeds: plain
FedAvg (groups valued, nothing left out: its model is exactly FedAvg's, since the groups'
sums add up to the cohort's) and robust mode (a group whose value is below −margin is left out
of that round's model). Both print their accuracy on the held-out test split, and the values of
every group per round.

The code paths are the service's: each pod trains with ``train_local`` and builds its
contribution with the pod agent's ``contribution`` (evaluating the candidates of the last round
on its held-out split); groups come from ``group_slot``/``form_groups``; every round runs the
real SecAgg+ protocol in one process (``training.secagg.simulate.simulate_round``: keys,
Shamir shares, masks, a disjoint graph per group, unmasking per group); the candidates come
from ``candidate_vectors``, the values from ``group_values``, the robust choice from
``left_out``. Only the transport (WebSocket, HTTP) and the database are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np

REQUEST = "bench-groups"


def spec_for(pods: int, groups: int, minimum: int, rounds: int, robust: bool) -> dict[str, Any]:
    from dataspace.bench.learning_tasks import TASKS, model_layers, request_spec

    task = TASKS["digits"]
    spec = request_spec(task, "fedavg", pods, model_layers("digits", np.zeros((1, 64))), 64)
    spec["title"] = "bench groups"
    spec["training"].update({"rounds": rounds, "min_participants": minimum})
    spec["valuation"] = {"groups": groups, "robust": robust}  # the default margin
    return spec


def run(
    *,
    pods: int = 24,
    groups: int = 3,
    minimum: int = 4,
    rounds: int = 8,
    robust: bool,
    seed: int = 0,
) -> dict[str, Any]:
    import torch

    from pods.agent import datasets
    from pods.agent.plan import PlanPrivacy, contribution
    from training.modelspec import build_module, validate_spec, vector_size
    from training.modelspec.federated import average_update, candidate_vectors
    from training.modelspec.server_optim import server_step
    from training.modelspec.trainer import evaluate, train_local
    from training.modelspec.valuation import (
        form_groups,
        group_slot,
        group_values,
        left_out,
        value_segments,
    )
    from training.modelspec.vectors import flatten_state, unflatten_state
    from training.secagg.encoding import Layout, decode
    from training.secagg.simulate import simulate_round

    torch.set_num_threads(1)
    spec = validate_spec(spec_for(pods, groups, minimum, rounds, robust))
    assert spec.valuation is not None
    plan = PlanPrivacy.of(spec)
    data = datasets.load("digits")
    pool, test = datasets.split(data, seed=seed)
    x_test, y_test = data.x[test].astype(np.float32), data.y[test]
    rng = np.random.default_rng(seed)
    shares = np.array_split(rng.permutation(pool), pods)
    pod_ids = [f"pod-{i}" for i in range(pods)]
    slots = {i + 1: group_slot(REQUEST, pod_ids[i], groups) for i in range(pods)}
    flipped = {u for u, s in slots.items() if s == 0}
    local: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for u in range(1, pods + 1):
        rows = shares[u - 1]
        y = data.y[rows]
        local[u] = (data.x[rows].astype(np.float32), (y + 1) % 10 if u in flipped else y)
    formed = form_groups(slots, groups, minimum)
    labels = [g.label for g in formed]
    flipped_label = next(g.label for g in formed if flipped & set(g.members))

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        like = build_module(spec).state_dict()
    vector = flatten_state(like, spec)
    dim = vector_size(spec)
    candidates: list[np.ndarray] = []
    candidate_labels: list[str] = []
    history: list[dict[str, Any]] = []
    for number in range(1, rounds + 1):
        state = unflatten_state(vector, spec, like=like)
        candidate_states = [unflatten_state(c, spec, like=like) for c in candidates]
        layout = Layout.for_training(
            model_dim=dim,
            max_clients=pods,
            clip_norm=plan.clip_norm,
            max_weight=1,
            max_eval_examples=plan.max_examples,
        ).with_parts(value_segments(len(candidates), plan.max_examples), max_clients=pods)
        inputs = {}
        for u, (x, y) in local.items():
            result = train_local(
                spec, state, x, y, seed=seed * 7919 + number * 101 + u, candidates=candidate_states
            )
            inputs[u] = contribution(result, plan, spec)
        secagg = simulate_round(
            inputs,
            layout,
            groups=[g.members for g in formed],
            min_survivors=plan.min_participants,
            threshold_fraction=plan.threshold_fraction,
            floors=plan.floors(),
            seed=seed * 1000 + number,
        )
        totals = decode(secagg.total, layout)
        values = group_values(totals, candidate_labels, classifier=True)
        dropped = left_out(values, spec.valuation.margin) if robust else None
        start = candidates[candidate_labels.index(dropped)] if dropped else vector
        vector, _ = server_step(
            spec.training.server_optimizer, start.copy(), average_update(spec, totals), None
        )
        group_sums = [decode(t, layout) for t in secagg.group_totals]
        candidates = candidate_vectors(spec, start, None, totals, group_sums)
        candidate_labels = [labels[p] for p in secagg.positions]
        accuracy = evaluate(spec, unflatten_state(vector, spec, like=like), x_test, y_test)
        history.append(
            {
                "round": number,
                "test_accuracy": round(accuracy.accuracy, 4),
                "values_of_round": number - 1 if values else None,
                "values": [asdict(v) for v in values],
                "left_out": dropped,
                "group_pods": [len(g) for g in secagg.groups],
            }
        )
    flagged = [
        h["round"]
        for h in history
        if any(
            v["label"] == flipped_label and v["value"] < -spec.valuation.margin for v in h["values"]
        )
    ]
    return {
        "mode": "robust" if robust else "plain fedavg",
        "pods": pods,
        "groups": labels,
        "flipped_group": flipped_label,
        "flipped_pods": len(flipped),
        "rounds": rounds,
        "final_accuracy": history[-1]["test_accuracy"],
        "rounds_flipped_group_flagged": flagged,
        "history": history,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataspace.bench.groups",
        description=(
            "Group-level value under SecAgg+: one group of pods holds label-flipped data "
            "(handwritten digits); prints plain FedAvg's and robust mode's test accuracy and "
            "each group's value per round."
        ),
    )
    parser.add_argument("--pods", type=int, default=24)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--min-participants", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = {}
    for robust in (False, True):
        started = time.monotonic()
        result = run(
            pods=args.pods,
            groups=args.groups,
            minimum=args.min_participants,
            rounds=args.rounds,
            robust=robust,
            seed=args.seed,
        )
        result["seconds"] = round(time.monotonic() - started, 1)
        out[result["mode"]] = result
        print(json.dumps(result), flush=True)
    plain, robust_run = out["plain fedavg"], out["robust"]
    print(
        f"plain FedAvg accuracy {plain['final_accuracy']:.4f}, "
        f"robust {robust_run['final_accuracy']:.4f}; "
        f"flipped group {plain['flipped_group']} flagged in rounds "
        f"{plain['rounds_flipped_group_flagged']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
