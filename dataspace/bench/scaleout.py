"""Scale-out: one round run by several web processes and a Celery worker on PostgreSQL and Redis.

The production topology of ``docker/compose.yaml`` on one machine: ``--web N`` uvicorn processes
sharing the Redis channel layer and cache, one Celery worker (solo pool: one process) for the
aggregation tree, the rounds clock in the first web process, and ``--simulators K`` ``simulate``
processes (default 2: one process's GIL otherwise caps the pods' side) whose pods are pinned to
the web processes in turn. Times the same rounds as
``dataspace.bench.federation --mode round`` and prints one JSON object with, per round, the
wall time, the service's CPU (all its processes) per pod, and each process's CPU seconds — what
an added web process takes over. Needs DATABASE_URL (PostgreSQL) and REDIS_URL; the database
is migrated and seeded as it is (use a scratch database). Example::

    python -m dataspace.bench.scaleout --web 2 --pods 100 --params 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from dataspace.bench.children import ROOT, Child, Profiler, bench_setup, wait_for
from dataspace.bench.federation import (
    _time_round,
    pooled,
    request_spec,
    shares,
    simulator_child,
)
from dataspace.processes import free_port, server_command, stop, wait_answering


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--web", type=int, default=2, help="web processes (default 2)")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--params", type=int, default=100_000, help="model size")
    parser.add_argument("--rounds", type=int, default=3, help="rounds to time (the first warms up)")
    parser.add_argument(
        "--simulators", type=int, default=2, help="simulator processes running the pods"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the first web process and the Celery worker with py-spy (a dev dependency) "
        "from the moment every pod is connected to the end of the rounds; collapsed stacks to "
        "DIR/web0.txt and DIR/worker.txt (flamegraph.pl, speedscope.app)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (each process's Python CPU)",
    )
    args = parser.parse_args(argv)
    args.dataset = "breast_screening"
    if args.web < 1:
        parser.error("--web must be at least 1")
    if not 1 <= args.simulators <= args.pods:
        parser.error("--simulators must be 1 to --pods")
    if not 1 <= args.pods <= pooled(args.dataset):
        parser.error(f"--pods must be 1 to {pooled(args.dataset)}")
    if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL"):
        parser.error("set DATABASE_URL (PostgreSQL) and REDIS_URL: processes share them")
    return args


def _start(name: str, command: list[str], data_dir: Path, **env: str) -> Child:
    log = data_dir / f"{name}.log"
    process = subprocess.Popen(  # noqa: S603
        command,
        cwd=ROOT,
        env={
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            **env,
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Child(name, process, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data_dir = bench_setup(
        "dataspace-scaleout-",
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
    from training.services import model_request_create

    children: list[Child] = []
    figures: dict[str, Any] = {"web": args.web, "pods": args.pods}
    try:
        worker = _start(
            "worker",
            [
                *(sys.executable, "-m", "celery", "-A", "dataspace", "worker", "-P", "solo"),
                *("-n", f"scaleout{os.getpid()}@%h", "--loglevel", "warning"),
            ],
            data_dir,
        )
        children.append(worker)
        webs: list[tuple[str, Child]] = []
        for n in range(args.web):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            web = _start(
                f"web{n}",
                server_command(port, "--log-level", "warning"),
                data_dir,
                SITE_URL=url,
                ROUNDS_TICK_IN_PROCESS="1" if n == 0 else "0",  # one clock, as beat would be
            )
            children.append(web)
            webs.append((url, web))
        for url, web in webs:
            if not wait_answering(f"{url}/readyz", web.process, args.timeout):
                web.check()
                raise SystemExit(f"{web.name} did not start")
        prefix = f"scale{os.getpid()}"
        spec = request_spec(args.dataset, args.pods, args.params, args.rounds)
        for n, (url, _) in enumerate(webs):  # pods pinned to the web processes in turn
            call_command(
                "provision_pods",
                "--simulated",
                count=args.pods // args.web + (1 if n < args.pods % args.web else 0),
                homes=data_dir / f"homes-{n}",
                server=url,
                prefix=f"{prefix}-{n}",
                stdout=open(os.devnull, "w"),  # noqa: SIM115
            )
        (data_dir / "pods").mkdir()
        for home in sorted(data_dir.glob("homes-*/*")):  # the simulators claim them in turn
            (data_dir / "pods" / f"{home.parent.name}-{home.name}").symlink_to(home)
        model_request = model_request_create(
            provider=Provider.objects.get(), spec=spec, weights=demo_weights(spec)
        )
        for pod in Pod.objects.filter(name__startswith=f"{prefix}-"):
            consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        simulators = [
            simulator_child(data_dir, data_dir / "pods", args, part, share)
            for part, share in enumerate(shares(args.pods, args.simulators))
        ]
        children.extend(simulators)
        mine = online_pods().filter(name__startswith=f"{prefix}-")
        if not wait_for(lambda: mine.count() >= args.pods, args.timeout, children):
            raise SystemExit(f"only {mine.count()} of {args.pods} pods connected")
        service = [web for _, web in webs] + [worker]
        profilers = []
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            profilers = [
                Profiler(
                    child.process.pid,
                    args.profile / f"{child.name}.txt",
                    data_dir / f"py-spy-{child.name}.log",
                    gil=args.profile_gil,
                )
                for child in (webs[0][1], worker)
            ]
        figures["rounds"] = [
            _time_round(model_request, number, args, service, simulators)
            for number in range(1, args.rounds + 1)
        ]
        for profiler in profilers:
            profiler.stop()
        figures["round_s"] = [r["round_s"] for r in figures["rounds"]]
        figures["service_cpu_ms_per_pod"] = [r["server_cpu_ms_per_pod"] for r in figures["rounds"]]
        figures["data_dir"] = str(data_dir)
    finally:
        for child in reversed(children):
            stop(child.process, 30)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
