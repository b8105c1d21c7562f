"""``make bench-learning``: how federated strategies hold up under label skew and slow devices.

The pure training loop in one process, for speed: every pod trains with
:func:`training.modelspec.trainer.train_local` (the function the pod agent runs), builds its
masked-vector parts with :mod:`training.modelspec.federated`, and encodes them with the real
SecAgg+ fixed-point encoding (:mod:`training.secagg.encoding`, Z_2^32); the server decodes only
the sum and applies :mod:`training.modelspec.server_optim`. The pairwise masks are left out:
they cancel exactly in the sum (tests/secagg/ proves that for every layout used here), so they
change no figure, only the run time.

For each data set (handwritten digits with a small CNN, breast screening with the demo's MLP),
partition (IID, Dirichlet 0.3 and 0.1 over 100 pods; Hsu et al. 2019) and strategy (FedAvg,
FedAvgM, FedAdam, FedYogi, FedAdagrad, SCAFFOLD, FedNova), and a heterogeneous-device setting
(Dirichlet 0.1, half the pods with a quarter of the local-step budget), one JSON line: accuracy
on the held-out split, the same model trained centrally on the pooled data, the mean accuracy of
pods training alone, the first round within the target gap of centralized, and bytes per pod
per round. A PNG chart of accuracy per round goes next to it.

Honest tuning: ``--eval-on validation`` carves a validation split out of the pods' pool and
evaluates there; the test split is then never read. The defaults (the tasks in
:mod:`dataspace.bench.learning_tasks`) were chosen that way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dataspace.bench.learning_report import plot, table
from dataspace.bench.learning_tasks import (
    HETERO_PARTITION,
    PARTITIONS,
    STRATEGIES,
    TASKS,
    Data,
    Task,
    load_data,
    model_layers,
    request_spec,
)

CLIP_NORM = 10.0  # settings.ROUND_UPDATE_CLIP
MAX_EXAMPLES = 1000  # settings.ROUND_MAX_EXAMPLES: example weighting caps there


@dataclass
class Federation:
    """The pods' data partition and device speeds for one configuration."""

    parts: list[npt.NDArray[np.intp]]
    max_steps: list[int | None]


def run_strategy(
    task: Task,
    strategy: str,
    data: Data,
    federation: Federation,
    *,
    seed: int,
) -> dict[str, Any]:
    import torch

    from training.modelspec import build_module, validate_spec, vector_size
    from training.modelspec.federated import (
        average_update,
        federated_parts,
        max_local_steps,
    )
    from training.modelspec.server_optim import scaffold_server_control, server_step
    from training.modelspec.trainer import evaluate, train_local
    from training.modelspec.vectors import flatten_state, unflatten_state
    from training.secagg.encoding import Layout, decode, encode_vector

    pods = len(federation.parts)
    layers = model_layers(task.dataset, data.x_train)
    spec = validate_spec(request_spec(task, strategy, pods, layers, data.x_train.shape[1]))
    algorithm = spec.training.algorithm["type"]
    dim = vector_size(spec)
    layout = Layout.for_training(
        model_dim=dim,
        max_clients=pods,
        clip_norm=CLIP_NORM,
        max_weight=1,
        max_eval_examples=MAX_EXAMPLES,
        control_dim=dim if algorithm == "scaffold" else 0,
        control_clip=float(spec.training.algorithm.get("control_clip", 100.0)),
        max_local_steps=max_local_steps(spec, MAX_EXAMPLES) if algorithm == "fednova" else 0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        initial = build_module(spec).state_dict()
    vector = flatten_state(initial, spec)
    optimizer_state: dict[str, Any] | None = None
    server_control = np.zeros(dim, np.float32) if algorithm == "scaffold" else None
    controls: list[npt.NDArray[np.float32] | None] = [None] * pods
    rng = np.random.default_rng(seed)
    accuracy: list[float] = []
    federated_eval: list[float | None] = []
    steps_taken: list[float] = []
    for number in range(1, task.rounds + 1):
        state = unflatten_state(vector, spec, like=initial)
        total = np.zeros(layout.length, np.uint32)
        steps = 0
        for pod, rows in enumerate(federation.parts):
            result = train_local(
                spec,
                state,
                data.x_train[rows],
                data.y_train[rows],
                seed=seed * 1_000_003 + number * 1009 + pod,
                max_steps=federation.max_steps[pod],
                server_control=server_control,
                client_control=controls[pod],
            )
            steps += result.steps
            weight = min(result.num_examples, MAX_EXAMPLES) / MAX_EXAMPLES
            parts: dict[str, npt.NDArray[np.floating[Any]]] = dict(
                federated_parts(spec, result, weight=weight, clip_norm=CLIP_NORM)
            )
            parts["eval_loss"] = np.array([result.evaluation.loss_sum])
            parts["eval_correct"] = np.array([float(result.evaluation.correct)])
            parts["eval_examples"] = np.array([float(result.evaluation.examples)])
            total += encode_vector(parts, layout, rng)  # uint32: wraps mod 2^32 like the masks
            if algorithm == "scaffold":
                controls[pod] = result.control
        totals = decode(total, layout)
        average = average_update(spec, totals)
        vector, optimizer_state = server_step(
            spec.training.server_optimizer, vector, average, optimizer_state
        )
        if server_control is not None:
            server_control = scaffold_server_control(
                server_control, totals["control_delta"], population=pods
            )
        examples = float(totals["eval_examples"][0])
        federated_eval.append(
            round(float(totals["eval_correct"][0]) / examples, 4) if examples else None
        )
        model = unflatten_state(vector, spec, like=initial)
        accuracy.append(round(evaluate(spec, model, data.x_eval, data.y_eval).accuracy, 4))
        steps_taken.append(steps / pods)
        if not np.all(np.isfinite(vector)):
            break  # diverged: the remaining rounds would only repeat NaN
    upload = 4 * layout.length
    download = 4 * dim * (2 if algorithm == "scaffold" else 1)  # weights (+ c for SCAFFOLD)
    return {
        "spec": spec,
        "initial": initial,
        "accuracy_per_round": accuracy,
        "federated_eval_per_round": federated_eval,
        "mean_local_steps": round(float(np.mean(steps_taken)), 2),
        "bytes_up_per_pod_round": upload,
        "bytes_down_per_pod_round": download,
        "bytes_per_pod_round": upload + download,
        "model_parameters": dim,
    }


_CENTRAL: dict[tuple[Any, ...], float] = {}


def baselines(
    task: Task, data: Data, parts: list[npt.NDArray[np.intp]], *, seed: int, local: bool
) -> dict[str, float | None]:
    """Centralized (all pods' data pooled, the same optimizer, ``central_epochs`` epochs) and
    the mean accuracy of pods training alone for as many steps as each takes in the whole
    federation (rounds × its step budget)."""
    import torch

    from training.modelspec import build_module, validate_spec
    from training.modelspec.trainer import evaluate, train_centralized

    layers = model_layers(task.dataset, data.x_train)
    spec = validate_spec(request_spec(task, "fedavg", len(parts), layers, data.x_train.shape[1]))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        initial = build_module(spec).state_dict()
    key = (task.dataset, task.central_epochs, task.lr, task.batch_size, data.eval_split, seed)
    if key not in _CENTRAL:  # the same pooled data whatever the partition
        central = train_centralized(
            spec, initial, data.x_train, data.y_train, epochs=task.central_epochs, seed=seed
        )
        _CENTRAL[key] = round(evaluate(spec, central, data.x_eval, data.y_eval).accuracy, 4)
    out: dict[str, float | None] = {"centralized_accuracy": _CENTRAL[key]}
    if local:
        alone = []
        for rows in parts:
            batches = max(1, math.ceil(len(rows) / task.batch_size))
            epochs = max(
                1, round(task.rounds * min(task.local_steps, task.local_epochs * batches) / batches)
            )
            model = train_centralized(
                spec, initial, data.x_train[rows], data.y_train[rows], epochs=epochs, seed=seed
            )
            alone.append(evaluate(spec, model, data.x_eval, data.y_eval).accuracy)
        out["local_only_accuracy_mean"] = round(float(np.mean(alone)), 4)
    else:
        out["local_only_accuracy_mean"] = None
    return out


def federation_for(
    task: Task, data: Data, partition: str, pods: int, *, hetero: bool, seed: int
) -> Federation:
    from pods.agent import datasets

    parts = datasets.partition(
        data.y_train, pods, alpha=datasets.parse_partition(partition), seed=seed
    )
    slow = set(np.random.default_rng(seed + 7).permutation(pods)[: pods // 2].tolist())
    quarter = max(1, task.local_steps // 4)
    return Federation(
        parts=parts,
        max_steps=[quarter if hetero and p in slow else None for p in range(pods)],
    )


def rounds_to(accuracy: Sequence[float], target: float) -> int | None:
    return next((i + 1 for i, a in enumerate(accuracy) if a >= target), None)


def run(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    lines: list[dict[str, Any]] = []
    jsonl = (out / "results.jsonl").open("w")
    for name in args.datasets:
        task = TASKS[name]
        if args.rounds:
            task = replace(task, rounds=args.rounds)
        if args.quick:
            task = replace(task, central_epochs=2)
        data = load_data(name, seed=args.seed, eval_on=args.eval_on)
        settings: list[tuple[str, bool]] = [(p, False) for p in args.partitions]
        if args.hetero:
            settings.append((HETERO_PARTITION, True))
        for partition, hetero in settings:
            federation = federation_for(
                task, data, partition, args.pods, hetero=hetero, seed=args.seed
            )
            base = baselines(task, data, federation.parts, seed=args.seed, local=not hetero)
            gap = 0.05 if hetero else task.target_gap
            centralized = float(base["centralized_accuracy"] or 0.0)
            for strategy in args.strategies:
                started = time.process_time()
                result = run_strategy(task, strategy, data, federation, seed=args.seed)
                accuracy = result["accuracy_per_round"]
                final = accuracy[-1] if accuracy else 0.0
                line = {
                    "dataset": name,
                    "model": "cnn" if name == "digits" else "mlp",
                    "partition": partition,
                    "devices": "half at 1/4 budget" if hetero else "uniform",
                    "strategy": strategy,
                    "pods": args.pods,
                    "rounds": task.rounds,
                    "local_steps_budget": task.local_steps,
                    "mean_local_steps": result["mean_local_steps"],
                    "eval_split": data.eval_split,
                    "accuracy": final if math.isfinite(final) else None,
                    **base,
                    "gap_points": round(100 * (centralized - final), 2),
                    "target_gap_points": round(100 * gap, 1),
                    "rounds_to_target": rounds_to(accuracy, centralized - gap),
                    "bytes_up_per_pod_round": result["bytes_up_per_pod_round"],
                    "bytes_down_per_pod_round": result["bytes_down_per_pod_round"],
                    "bytes_per_pod_round": result["bytes_per_pod_round"],
                    "model_parameters": result["model_parameters"],
                    "accuracy_per_round": accuracy,
                    "federated_eval_per_round": result["federated_eval_per_round"],
                    "cpu_s": round(time.process_time() - started, 1),
                }
                lines.append(line)
                text = json.dumps(line)
                jsonl.write(text + "\n")
                jsonl.flush()
                print(text, flush=True)
    jsonl.close()
    return lines


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataspace.bench.learning", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (tests use it)")
    parser.add_argument("--output", type=Path, default=Path("bench-output/learning"))
    parser.add_argument("--datasets", default=",".join(TASKS))
    parser.add_argument("--partitions", default=",".join(PARTITIONS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=0, help="override every task's rounds")
    parser.add_argument("--no-hetero", dest="hetero", action="store_false")
    parser.add_argument("--eval-on", choices=("test", "validation"), default="test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.partitions = [p for p in args.partitions.split(",") if p]
    args.strategies = [s for s in args.strategies.split(",") if s]
    unknown = [d for d in args.datasets if d not in TASKS] + [
        s for s in args.strategies if s not in STRATEGIES
    ]
    if unknown:
        parser.error(f"unknown data set or strategy: {', '.join(unknown)}")
    from pods.agent.datasets import parse_partition

    for p in args.partitions:
        try:
            parse_partition(p)
        except ValueError as error:
            parser.error(str(error))
    if args.quick:
        args.pods, args.rounds = min(args.pods, 10), args.rounds or 2
        if args.partitions == list(PARTITIONS):
            args.partitions = ["dirichlet:0.1"]
    if args.pods < 2:
        parser.error("--pods must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    lines = run(args, out)
    plot(lines, out / "learning.png")
    print(table(lines), file=sys.stderr)
    print(f"results: {out / 'results.jsonl'}, chart: {out / 'learning.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
