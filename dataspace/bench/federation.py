"""Federation benchmarks over real sockets: a server process and ``simulate`` processes.

``--mode round``: one SecAgg+ round with N simulated pods and a model of about P parameters
(local training included), timed from the round's opening to its new model version.
``--dataset``: breast screening (456 pooled records: at most 456 pods) or handwritten digits
(1438 pooled records: rounds of up to 1438 pods). ``--simulators K``: the pods run in K simulator
processes (each claims its share of the homes; its own GIL), their CPU summed.
``--mode connections``: N pods connect and stay connected; reports how many the one server
holds, and the server's and simulator's memory and CPU while they idle on heartbeats.

Runs on the embedded default in a fresh temporary data directory (or on DATABASE_URL/REDIS_URL
when set), the server with DEBUG off as in production. Prints one JSON object of figures: in
round mode also the CPU seconds the server and the simulator spent while the round ran, the
server's CPU milliseconds per pod per round, and each stage's duration and server CPU (stages
from the close times recorded on the round), and ``host_reference_s``, this host's time for a
fixed piece of plain Python (figures from hosts of different speed compare once divided by
it). The server's CPU is the main figure on a shared
machine: wall times grow with whatever else runs. A child process (server or simulator) that
exits ends the benchmark at once, with its log's last lines. Example::

    python -m dataspace.bench.federation --mode round --pods 100 --params 100000
    python -m dataspace.bench.federation --mode round --dataset digits --pods 1000 --params 10000
    python -m dataspace.bench.federation --mode connections --pods 1000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dataspace.bench.children import (
    ROOT,
    Child,
    Profiler,
    bench_server,
    bench_setup,
    host_reference_s,
    usage,
    usage_sum,
    wait_for,
)
from dataspace.processes import stop, wait_answering

DATASETS = ("breast_screening", "digits")


def pooled(dataset: str) -> int:
    """Records the pods share of a bundled data set (its held-out test split never handed out):
    the most pods a simulation of it can have, one record each at least."""
    from pods.agent import datasets

    return len(datasets.split(datasets.load(dataset), seed=0)[0])


def stage_spans(training_round: Any) -> list[tuple[str, float, float]]:
    """(stage, start, end) in Unix seconds of each stage of a finished round, from the close
    times the engine records on it (``metrics.closed_at``); the last span, ``aggregate``, runs
    from the close of unmasking to the round's end."""
    from datetime import datetime

    spans = []
    previous = training_round.started_at.timestamp()
    closed = training_round.metrics.get("closed_at", {})
    for stage, at in sorted(closed.items(), key=lambda item: item[1]):
        when = datetime.fromisoformat(at).timestamp()
        spans.append((stage, previous, when))
        previous = when
    if training_round.finished_at is not None:
        spans.append(("aggregate", previous, training_round.finished_at.timestamp()))
    return spans


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds spent between two Unix times, from (time, cumulative CPU seconds) samples
    (linear between samples, clamped to the first and last)."""

    def at(t: float) -> float:
        if not samples:
            return 0.0
        if t <= samples[0][0]:
            return samples[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return samples[-1][1]

    return max(0.0, at(end) - at(start))


def request_spec(dataset: str, pods: int, params: int, rounds: int) -> dict[str, Any]:
    """The benchmark's request: an MLP with one hidden layer sized so the model has about
    ``params`` parameters, on breast screening (2 classes) or digits (10), every pod in the
    cohort."""
    from dataspace.demo import demo_request_spec
    from pods.agent.datasets import DATASETS

    if dataset == "breast_screening":
        hidden = max(1, round((params - 2) / (30 + 1 + 2)))
        return demo_request_spec(
            rounds=rounds,
            cohort_size=pods,
            min_participants=pods,
            hidden=hidden,
            title="Benchmark",
            standardize=([0.0] * 30, [1000.0] * 30),
        )
    from dataspace.catalog import BUNDLED

    category, label = DATASETS[dataset]
    fields = next(c["fields"] for c in json.loads(BUNDLED.read_text()) if c["slug"] == category)
    features = [f["name"] for f in fields if f["name"] != label]
    n, classes = len(features), 10
    hidden = max(1, round((params - classes) / (n + 1 + classes)))
    return {
        "title": "Benchmark: handwritten digits",
        "purpose": "Measure the service's cost per pod in a round of a thousand pods.",
        "intended_use": "Measuring the service's cost per pod; a benchmark, not a product.",
        "out_of_scope_uses": ["Any decision about a person"],
        "data": {"category": category, "features": features, "label": label},
        "model": {
            "layers": [
                # Ink levels 0–16, scaled to [0, 1] by fixed constants (no data needed).
                {"type": "standardize", "mean": [0.0] * n, "std": [16.0] * n},
                {"type": "linear", "in_features": n, "out_features": hidden},
                {"type": "relu"},
                {"type": "linear", "in_features": hidden, "out_features": classes},
            ]
        },
        "training": {
            "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "lr": 0.05},
            "local_epochs": 1,
            "batch_size": 32,
            "rounds": rounds,
            "cohort_size": pods,
            "min_participants": pods,
        },
        "privacy": {"secagg_threshold": 0.6},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["round", "connections"], default="round")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--params", type=int, default=100_000, help="model size (round mode)")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="the pods' data: breast_screening (≤ 456 pods; the default in round mode) or "
        "digits (≤ 1438 pods; connections mode always uses it)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds to time (round mode); the first also fetches receipts and warms up",
    )
    parser.add_argument(
        "--simulators",
        type=int,
        default=1,
        help="simulator processes sharing the pods (each its own share, data split and GIL; "
        "their CPU is summed)",
    )
    parser.add_argument("--hold", type=float, default=30.0, help="idle seconds to measure CPU")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="sample the server with py-spy (a dev dependency) from the moment every pod is "
        "connected to the end of the rounds; collapsed stacks to PATH (flamegraph.pl, "
        "speedscope.app)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (the server's Python CPU; "
        "threads waiting for the GIL are otherwise sampled as busy)",
    )
    args = parser.parse_args(argv)
    if args.dataset is None:
        args.dataset = "breast_screening" if args.mode == "round" else "digits"
    if args.mode == "connections":
        args.dataset = "digits"  # no round: the data only have to go round
    if not 1 <= args.simulators <= args.pods:
        parser.error("--simulators must be 1 to --pods")
    most = pooled(args.dataset)
    if not 1 <= args.pods <= most:
        parser.error(
            f"--pods must be 1 to {most} with --dataset {args.dataset} "
            "(one pooled record per pod at least)"
        )
    return args


def _time_round(
    model_request: Any,
    number: int,
    args: argparse.Namespace,
    server: Child | list[Child],
    simulator: Child | list[Child],
) -> dict[str, Any]:
    """Wait for round ``number`` of the request, sampling the service's CPU as it runs (the sum
    over ``server``'s processes: several web processes and a worker in the scale-out bench; the
    simulators' likewise);
    its figures (wall and CPU seconds, server CPU ms per pod for the round and for each
    stage, and each process's CPU seconds)."""
    from training.models import TrainingRound

    servers = server if isinstance(server, list) else [server]
    simulators = simulator if isinstance(simulator, list) else [simulator]
    children = [*servers, *simulators]
    rounds = TrainingRound.objects.filter(model_request=model_request, number=number)
    if not wait_for(rounds.exists, args.timeout, children, every=0.05):
        raise SystemExit(f"round {number} did not open within {args.timeout:.0f} s")
    samples: list[tuple[float, float]] = []

    def cpu_each() -> list[float]:
        return [usage(child.process.pid)[1] for child in servers]

    def simulators_cpu() -> float:
        return sum(usage(child.process.pid)[1] for child in simulators)

    each0, sim0 = cpu_each(), simulators_cpu()
    cpu0 = sum(each0), sim0

    def finished() -> bool:
        samples.append((time.time(), sum(cpu_each())))
        return rounds.filter(finished_at__isnull=False).exists()

    if not wait_for(finished, args.timeout, children, every=0.05):
        raise SystemExit(f"round {number} did not finish within {args.timeout:.0f} s")
    each1 = cpu_each()
    cpu1 = sum(each1), simulators_cpu()
    samples.append((time.time(), cpu1[0]))
    done = rounds.order_by("pk").first()
    if done is None or done.status != TrainingRound.Status.COMPLETED or done.finished_at is None:
        raise SystemExit(f"round {number} did not complete: {done and done.status}")
    spans = stage_spans(done)
    per_pod = 1000 / args.pods
    return {
        "round_s": round((done.finished_at - done.started_at).total_seconds(), 2),
        "survivors": done.survivors,
        # CPU seconds each process spent meanwhile (2 cores: ≤ 2 × round_s).
        "cpu_s": {
            "server": round(cpu1[0] - cpu0[0], 2),
            "simulator": round(cpu1[1] - cpu0[1], 2),
        },
        "server_cpu_ms_per_pod": round((cpu1[0] - cpu0[0]) * per_pod, 1),
        "stage_s": {stage: round(end - start, 2) for stage, start, end in spans},
        "process_cpu_s": {
            child.name: round(b - a, 2) for child, a, b in zip(servers, each0, each1, strict=True)
        },
        "stage_server_cpu_ms_per_pod": {
            stage: round(cpu_between(samples, start, end) * per_pod, 1)
            for stage, start, end in spans
        },
    }


def shares(pods: int, parts: int) -> list[int]:
    """``pods`` split as evenly as can be into ``parts`` (the first ones one bigger)."""
    return [pods // parts + (1 if part < pods % parts else 0) for part in range(parts)]


def simulator_child(
    data_dir: Path, homes: Path, args: argparse.Namespace, part: int, pods: int
) -> Child:
    """Simulator ``part`` running ``pods`` of the homes: each claims its own (``--claim``) and
    splits the data set among its pods with a seed of its own."""
    name = "simulator" if args.simulators == 1 else f"simulator-{part + 1}"
    suffix = "" if args.simulators == 1 else f"-{part + 1}"
    log = data_dir / f"pods{suffix}.log"
    process = subprocess.Popen(  # noqa: S603
        [
            *(sys.executable, "-m", "pods.agent.cli", "--json", "simulate"),
            *("--pods", str(pods), "--homes", str(homes), "--seed", str(part)),
            *("--stats-every", "3600", "--dataset", args.dataset),
            *(("--claim",) if args.simulators > 1 else ()),
        ],
        cwd=ROOT,
        stdout=(data_dir / f"pods{suffix}.jsonl").open("wb"),
        stderr=log.open("wb"),
    )
    return Child(name, process, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped (SIGTERM): still stop the server and the simulator on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    data_dir = bench_setup(
        "dataspace-bench-",
        ROUND_STAGE_SECONDS="120",
        ROUNDS_TICK_SECONDS="0.5",
        POD_HEARTBEAT_TIMEOUT="90",
    )
    from django.core.management import call_command

    from consent.services import consent_grant
    from dataspace.demo import demo_weights
    from pods.models import Pod
    from pods.presence import online_pods
    from training.models import Provider
    from training.modelspec import validate_spec
    from training.services import model_request_create

    port, process, server_log = bench_server(data_dir)
    url = f"http://127.0.0.1:{port}"
    server = Child("server", process, server_log)
    children = [server]
    profiler = None
    figures: dict[str, Any] = {"mode": args.mode, "pods": args.pods, "dataset": args.dataset}
    figures["host_reference_s"] = host_reference_s()
    try:
        if not wait_answering(f"{url}/readyz", server.process, args.timeout):
            server.check()
            raise SystemExit("the server did not start")
        homes = data_dir / "pods"
        t0 = time.monotonic()
        call_command(
            "provision_pods",
            "--simulated",
            count=args.pods,
            homes=homes,
            server=url,
            prefix=f"bench{port}",
            stdout=open(os.devnull, "w"),  # noqa: SIM115
        )
        figures["provision_s"] = round(time.monotonic() - t0, 1)
        model_request = None
        if args.mode == "round":
            spec = request_spec(args.dataset, args.pods, args.params, args.rounds)
            model_request = model_request_create(
                provider=Provider.objects.get(), spec=spec, weights=demo_weights(spec)
            )
            figures["params"] = validate_spec(model_request.spec).parameter_count
            for pod in Pod.objects.filter(name__startswith=f"bench{port}-pod-"):
                consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        simulators = [
            simulator_child(data_dir, homes, args, part, share)
            for part, share in enumerate(shares(args.pods, args.simulators))
        ]
        children.extend(simulators)
        t0 = time.monotonic()
        connected = wait_for(lambda: online_pods().count() >= args.pods, args.timeout, children)
        figures["connect_all_s"] = round(time.monotonic() - t0, 1) if connected else None
        figures["connected"] = online_pods().count()
        if args.profile is not None:
            # From here: the rounds alone, not the server's start-up and the pods' connecting.
            profiler = Profiler(
                server.process.pid, args.profile, data_dir / "py-spy.log", gil=args.profile_gil
            )
        if model_request is not None:
            figures["rounds"] = [
                _time_round(model_request, number, args, server, simulators)
                for number in range(1, args.rounds + 1)
            ]
            figures["round_s"] = [r["round_s"] for r in figures["rounds"]]
            figures["server_cpu_ms_per_pod"] = [
                r["server_cpu_ms_per_pod"] for r in figures["rounds"]
            ]
        if profiler is not None:
            profiler.stop()
        server_mb, server_cpu0 = usage(server.process.pid)
        sim_mb, sim_cpu0 = usage_sum(simulators)
        wait_for(lambda: False, args.hold, children)
        server_mb, server_cpu1 = usage(server.process.pid)
        sim_mb, sim_cpu1 = usage_sum(simulators)
        figures.update(
            {
                "connected_after_hold": online_pods().count(),
                "server_rss_mib": round(server_mb, 1),
                "server_cpu_percent_idle": round(100 * (server_cpu1 - server_cpu0) / args.hold, 1),
                "simulator_rss_mib": round(sim_mb, 1),
                "simulator_cpu_percent_idle": round(100 * (sim_cpu1 - sim_cpu0) / args.hold, 1),
            }
        )
    finally:
        for child in reversed(children):
            stop(child.process, 30)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
