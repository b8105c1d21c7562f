"""Federation benchmarks over real sockets: a server process and a ``simulate`` process.

``--mode round``: one SecAgg+ round with N simulated pods and a model of about P parameters
(local training included), timed from the round's opening to its new model version.
``--mode connections``: N pods connect and stay connected; reports how many the one server
holds, and the server's and simulator's memory and CPU while they idle on heartbeats.

Runs on the embedded default in a fresh temporary data directory (or on DATABASE_URL/REDIS_URL
when set), the server with DEBUG off as in production. Prints one JSON object of figures: in
round mode also the CPU seconds the server and the simulator spent while the round ran, and
each stage's duration (from the close times recorded on the round). Example::

    python -m dataspace.bench.federation --mode round --pods 100 --params 100000
    python -m dataspace.bench.federation --mode connections --pods 1000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository: servers start from there


def _proc(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of a process, from /proc."""
    if not Path(f"/proc/{pid}/status").exists():
        raise SystemExit(f"process {pid} has exited; see the logs in DATASPACE_DATA_DIR")
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


def _stage_seconds(training_round: Any) -> dict[str, float]:
    """Seconds each stage of a round took, from the close times the engine records on it."""
    from datetime import datetime

    stages: dict[str, float] = {}
    previous = training_round.started_at
    closed = training_round.metrics.get("closed_at", {})
    for stage, at in sorted(closed.items(), key=lambda item: item[1]):
        when = datetime.fromisoformat(at)
        stages[stage] = round((when - previous).total_seconds(), 2)
        previous = when
    return stages


def bench_setup(prefix: str, **env: str) -> Path:
    """A fresh data directory (``DATASPACE_DATA_DIR``), ``env`` in the environment, Django set
    up on it (or on DATABASE_URL when set), migrated and seeded. Returns the directory."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("DEBUG", "1")
    os.environ["DATASPACE_DATA_DIR"] = str(data_dir)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataspace.settings")
    if not os.environ.get("RECEIPT_SIGNING_KEY"):
        # The server runs with DEBUG off, which (on PostgreSQL) wants the key given.
        os.environ["RECEIPT_SIGNING_KEY"] = base64.b64encode(os.urandom(32)).decode()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("seed_demo", quiet=True)
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["round", "connections"], default="round")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--params", type=int, default=100_000, help="model size (round mode)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds to time (round mode); the first also fetches receipts and warms up",
    )
    parser.add_argument("--hold", type=float, default=30.0, help="idle seconds to measure CPU")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    data_dir = bench_setup(
        "dataspace-bench-",
        ROUND_STAGE_SECONDS="120",
        ROUNDS_TICK_SECONDS="0.5",
        POD_HEARTBEAT_TIMEOUT="90",
    )
    from django.core.management import call_command

    from consent.services import consent_grant
    from dataspace.demo import demo_request_spec, demo_weights
    from dataspace.processes import free_port, server_command, stop, wait_answering, wait_until
    from pods.models import Pod
    from pods.presence import online_pods
    from training.models import Provider, TrainingRound
    from training.modelspec import validate_spec
    from training.services import model_request_create

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # noqa: S603
        server_command(port, "--log-level", "warning"),
        cwd=ROOT,
        # The server runs as in production (DEBUG off: no per-query bookkeeping).
        env={
            **os.environ,
            "ROUNDS_TICK_IN_PROCESS": "1",
            "SITE_URL": url,
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        },
        stdout=(data_dir / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    simulator: subprocess.Popen[bytes] | None = None
    figures: dict[str, Any] = {"mode": args.mode, "pods": args.pods}
    try:
        if not wait_answering(f"{url}/readyz", server):
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
            # A hidden layer sized so the model has about --params parameters.
            hidden = max(1, round((args.params - 2) / (30 + 1 + 2)))
            spec = demo_request_spec(
                rounds=args.rounds,
                cohort_size=args.pods,
                min_participants=args.pods,
                hidden=hidden,
                title="Benchmark",
                standardize=([0.0] * 30, [1000.0] * 30),
            )
            model_request = model_request_create(
                provider=Provider.objects.get(), spec=spec, weights=demo_weights(spec)
            )
            figures["params"] = validate_spec(model_request.spec).parameter_count
            for pod in Pod.objects.filter(name__startswith=f"bench{port}-pod-"):
                consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        simulator = subprocess.Popen(  # noqa: S603
            [
                *(sys.executable, "-m", "pods.agent.cli", "--json", "simulate"),
                *("--pods", str(args.pods), "--homes", str(homes), "--stats-every", "3600"),
                # Digits has records enough for 1000 pods; the round uses breast screening.
                *("--dataset", "breast_screening" if args.mode == "round" else "digits"),
            ],
            cwd=ROOT,
            stdout=(data_dir / "pods.jsonl").open("wb"),
            stderr=(data_dir / "pods.log").open("wb"),
        )
        t0 = time.monotonic()
        connected = wait_until(lambda: online_pods().count() >= args.pods, args.timeout)
        figures["connect_all_s"] = round(time.monotonic() - t0, 1) if connected else None
        figures["connected"] = online_pods().count()
        if model_request is not None:
            figures["rounds"] = []
            for number in range(1, args.rounds + 1):
                rounds = TrainingRound.objects.filter(model_request=model_request, number=number)
                wait_until(rounds.exists, args.timeout, every=0.05)
                cpu0 = _proc(server.pid)[1], _proc(simulator.pid)[1]
                wait_until(
                    lambda: rounds.filter(finished_at__isnull=False).exists(),  # noqa: B023
                    args.timeout,
                    every=0.05,
                )
                cpu1 = _proc(server.pid)[1], _proc(simulator.pid)[1]
                done = rounds.order_by("pk").first()
                if (
                    done is None
                    or done.status != TrainingRound.Status.COMPLETED
                    or done.finished_at is None
                ):
                    raise SystemExit(f"round {number} did not complete: {done and done.status}")
                figures["rounds"].append(
                    {
                        "round_s": round((done.finished_at - done.started_at).total_seconds(), 2),
                        "survivors": done.survivors,
                        # CPU seconds each process spent meanwhile (2 cores: ≤ 2 × round_s).
                        "cpu_s": {
                            "server": round(cpu1[0] - cpu0[0], 2),
                            "simulator": round(cpu1[1] - cpu0[1], 2),
                        },
                        "stage_s": _stage_seconds(done),
                    }
                )
            figures["round_s"] = [r["round_s"] for r in figures["rounds"]]
        server_mb, server_cpu0 = _proc(server.pid)
        sim_mb, sim_cpu0 = _proc(simulator.pid)
        time.sleep(args.hold)
        server_mb, server_cpu1 = _proc(server.pid)
        sim_mb, sim_cpu1 = _proc(simulator.pid)
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
        stop(simulator, 30)
        stop(server, 30)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
