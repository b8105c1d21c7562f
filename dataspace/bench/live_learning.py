"""One learning configuration through the live server, next to the in-process bench's figure.

``make bench-learning`` runs its strategies in one process (the pods' trainer, the real
fixed-point encoding, no masks — they cancel). This runs one configuration (breast screening
with the demo's MLP, Dirichlet 0.3 over 20 pods, FedAvgM, 10 rounds by default) through the
real thing: a server process (embedded runtime, DEBUG off), ``provision_pods`` homes, a
``dataspace-pod simulate`` process holding the same partition of the same pool (same seed),
SecAgg+ with masks, the rounds engine's server optimizer. It evaluates every model version on
the same held-out test split and prints one JSON object with both runs' accuracy per round.

The two differ only where randomness does: the live rounds draw a public training seed per
round (the bench seeds each pod), and the masks' stochastic rounding differs. Example::

    python -m dataspace.bench.live_learning --strategy fedavgm --partition dirichlet:0.3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dataspace.bench.children import bench_server, bench_setup
from dataspace.bench.learning import federation_for, run_strategy
from dataspace.bench.learning_tasks import (
    STRATEGIES,
    TASKS,
    load_data,
    model_layers,
    request_spec,
)

ROOT = Path(__file__).resolve().parents[2]  # the repository: servers start from there


def live_spec(bench_spec: dict[str, Any], features: list[str], pods: int) -> dict[str, Any]:
    """The bench's request with the catalog's field names (the bench names them x0, x1, …) and
    every pod required in each round, as in the bench (a round opens only once all are online)."""
    data = {**bench_spec["data"], "features": features}
    training = {**bench_spec["training"], "min_participants": pods}
    return {**bench_spec, "data": data, "training": training}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(TASKS), default="breast_screening")
    parser.add_argument("--partition", default="dirichlet:0.3")
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="fedavgm")
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)  # the embedded runtime in a fresh data directory
    data_dir = bench_setup(
        "dataspace-live-learning-", DEBUG="1", ROUND_STAGE_SECONDS="120", ROUNDS_TICK_SECONDS="0.5"
    )
    import torch

    from dataspace.processes import stop, wait_answering, wait_until

    torch.set_num_threads(1)
    from django.core.management import call_command

    from consent.services import consent_grant
    from dataspace.models import DataCategory
    from pods.agent.datasets import DATASETS
    from pods.models import Pod
    from pods.presence import online_pods
    from training.models import ModelRequest, Provider
    from training.modelspec import load_weights, validate_spec
    from training.modelspec.trainer import evaluate
    from training.modelspec.weights import dump_weights
    from training.services import model_request_create

    task = replace(TASKS[args.dataset], rounds=args.rounds)
    data = load_data(args.dataset, seed=args.seed, eval_on="test")
    federation = federation_for(task, data, args.partition, args.pods, hetero=False, seed=args.seed)
    layers = model_layers(args.dataset, data.x_train)
    n_features = data.x_train.shape[1]
    bench_spec = request_spec(task, args.strategy, args.pods, layers, n_features)
    started = time.process_time()
    bench = run_strategy(task, args.strategy, data, federation, seed=args.seed)
    bench_cpu = time.process_time() - started

    category_slug, label = DATASETS[args.dataset]
    category = DataCategory.objects.get(slug=category_slug)
    features = [n for n in category.field_names() if n != label]
    spec = live_spec(bench_spec, features, args.pods)
    parsed = validate_spec(spec)
    model_request = model_request_create(
        provider=Provider.objects.get(),
        spec=spec,
        weights=dump_weights(bench["initial"]),  # the bench's initial model
    )

    port, server, _log = bench_server(data_dir)
    url = f"http://127.0.0.1:{port}"
    simulator: subprocess.Popen[bytes] | None = None
    live_started = time.monotonic()
    try:
        if not wait_answering(f"{url}/readyz", server):
            raise SystemExit(f"the server did not start; see {data_dir / 'server.log'}")
        homes = data_dir / "pods"
        call_command(
            "provision_pods",
            "--simulated",
            count=args.pods,
            homes=homes,
            server=url,
            prefix="live",
            stdout=open(os.devnull, "w"),  # noqa: SIM115
        )
        for pod in Pod.objects.filter(name__startswith="live-pod-"):
            consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        simulator = subprocess.Popen(  # noqa: S603
            [
                *(sys.executable, "-m", "pods.agent.cli", "--json", "simulate"),
                *("--pods", str(args.pods), "--homes", str(homes), "--stats-every", "3600"),
                *("--dataset", args.dataset, "--partition", args.partition),
                *("--seed", str(args.seed)),
            ],
            cwd=ROOT,
            stdout=(data_dir / "pods.jsonl").open("wb"),
            stderr=(data_dir / "pods.log").open("wb"),
        )
        wait_until(lambda: online_pods().count() >= args.pods, args.timeout)
        ended = (ModelRequest.Status.COMPLETED, ModelRequest.Status.FAILED)
        wait_until(
            lambda: ModelRequest.objects.get(pk=model_request.pk).status in ended,
            args.timeout,
        )
    finally:
        stop(simulator, 30)
        stop(server, 30)
    live_seconds = time.monotonic() - live_started
    model_request.refresh_from_db()
    live: list[float] = []
    for version in model_request.versions.filter(round_number__gt=0).order_by("round_number"):
        with version.weights.open("rb") as handle:
            state = load_weights(handle.read(), parsed)
        live.append(round(evaluate(parsed, state, data.x_eval, data.y_eval).accuracy, 4))
    # The pods' own held-out splits, from the masked sums (as the bench's federated_eval).
    rounds = model_request.rounds_run.filter(status="completed").order_by("number")
    live_federated = [
        None if r.metrics.get("eval_accuracy") is None else round(r.metrics["eval_accuracy"], 4)
        for r in rounds
    ]
    figures = {
        "dataset": args.dataset,
        "partition": args.partition,
        "strategy": args.strategy,
        "pods": args.pods,
        "rounds": args.rounds,
        "seed": args.seed,
        "live_status": model_request.status,
        "bench_accuracy": bench["accuracy_per_round"][-1],
        "live_accuracy": live[-1] if live else None,
        "bench_accuracy_per_round": bench["accuracy_per_round"],
        "live_accuracy_per_round": live,
        "bench_federated_eval_per_round": bench["federated_eval_per_round"],
        "live_federated_eval_per_round": live_federated,
        "bench_cpu_s": round(bench_cpu, 1),
        "live_wall_s": round(live_seconds, 1),
    }
    print(json.dumps(figures))
    return 0 if model_request.status == ModelRequest.Status.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
