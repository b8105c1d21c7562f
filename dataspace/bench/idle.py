"""Idle connections at scale: how many pods one server process holds, and what they cost it.

    python -m dataspace.bench.idle --steps 1000,5000,10000 --hold 60

Simulated pods (``dataspace-pod simulate``) carry a data set, a training stack and a pod home
each: 10,000 of them do not fit on a small machine. This benchmark's pods do exactly what an
idle real pod does on its control channel and nothing else: open ``/ws/pods/`` with the pod
agent's own ``pods.agent.channel.open_channel`` (the same library, options and extensions),
send ``hello`` with a real OAuth2 access token, sign the challenge with their
Ed25519 identity key, then send ``ping`` every ``heartbeat`` seconds as the ``welcome`` says;
a ``round.stage`` would get ``round.decline`` (an idle pod holds no consented data). They run
as plain asyncio connections in load-generator processes (``--generator FILE``; one per step).

The pods are real: owner accounts, pods, key-log entries and tokens made in bulk here
(``bulk_create``; per pod, ``pods.services.pod_provision`` would take minutes for 10,000), the
tokens stored as the OAuth2 provider stores them. The server is the production one (one uvicorn
process, DEBUG off, ``dataspace.processes.server_command``), on the embedded default or on
DATABASE_URL/REDIS_URL when set.

At each step, once every pod is connected and the server has settled, it reports the server's
resident memory and its CPU use over ``--hold`` seconds (a multiple of the heartbeat interval
is best), with the load average. The soft limit on open files is raised to the hard limit
(each connection is a descriptor in the server and in a generator); ``ulimit -Hn`` must exceed
the largest step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dataspace.processes import wait_answering

ROOT = Path(__file__).resolve().parents[2]
DECLINE_CODE = "no_consent"


# -- the load generator (no Django) ----------------------------------------------------------------


class Counts:
    def __init__(self) -> None:
        self.connected = 0
        self.failed = 0  # handshakes that failed (each is retried after a back-off)
        self.closed = 0  # connections the server closed after welcoming
        self.pings = 0


async def idle_pod(
    server: str, pod: dict[str, str], counts: Counts, gate: asyncio.Semaphore
) -> None:
    """One idle pod, for ever: the handshake of ``pods.agent.channel.PodChannel``, heartbeats,
    and — like it — a reconnection after a randomised back-off when either fails."""
    import base64
    import random

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from websockets.asyncio.client import ClientConnection
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    from pods.agent.channel import backoff_delay, open_channel
    from pods.agent.protocol import PING_TEXT, MessageType, challenge_message

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(pod["key"]))
    rng = random.Random()
    failures = (OSError, ConnectionClosed, InvalidHandshake, ConnectionError, TimeoutError)

    async def handshake() -> tuple[ClientConnection, float]:
        ws = await open_channel(server, open_timeout=120)
        try:
            await ws.send(json.dumps({"type": MessageType.HELLO, "token": pod["token"]}))
            challenge = json.loads(await ws.recv())
            if challenge.get("type") != MessageType.CHALLENGE:
                raise ConnectionError(challenge.get("type"))
            signature = key.sign(
                challenge_message(base64.b64decode(challenge["nonce"]), pod["pod_id"])
            )
            proof = base64.b64encode(signature).decode()
            await ws.send(json.dumps({"type": MessageType.PROVE, "signature": proof}))
            welcome = json.loads(await ws.recv())
            if welcome.get("type") != MessageType.WELCOME:
                raise ConnectionError(welcome.get("type"))
        except BaseException:
            await ws.close()
            raise
        return ws, float(welcome.get("heartbeat", 20))

    async def pinger(ws: ClientConnection, heartbeat: float) -> None:
        while True:
            await asyncio.sleep(heartbeat)
            await ws.send(PING_TEXT)
            counts.pings += 1

    attempt = 0
    while True:
        try:
            async with gate:
                ws, heartbeat = await handshake()
        except failures:
            counts.failed += 1
            await asyncio.sleep(backoff_delay(attempt, base=1.0, cap=30.0, rng=rng))
            attempt += 1
            continue
        attempt = 0
        counts.connected += 1
        ping_task = asyncio.create_task(pinger(ws, heartbeat))
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == MessageType.ROUND_STAGE:
                    decline = {"round": message.get("round"), "code": DECLINE_CODE}
                    await ws.send(json.dumps({"type": MessageType.ROUND_DECLINE, **decline}))
        except ConnectionClosed:
            pass
        finally:
            ping_task.cancel()
            counts.connected -= 1
        counts.closed += 1
        await asyncio.sleep(backoff_delay(0, base=1.0, cap=30.0, rng=rng))


async def generate(server: str, pods: list[dict[str, str]], concurrency: int) -> None:
    """Hold ``pods`` connected until SIGTERM; a JSON line of counts on stdout every second."""
    counts = Counts()
    gate = asyncio.Semaphore(concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(idle_pod(server, pod, counts, gate)) for pod in pods]
    while not stop.is_set():
        print(json.dumps(vars(counts)), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- set-up: pods in bulk ------------------------------------------------------------------------


def provision_bulk(count: int, prefix: str) -> list[dict[str, str]]:
    """``count`` simulated pods with owners, identity keys, key-log entries and OAuth2 tokens,
    made as ``pods.services.pod_provision`` makes one, in a few bulk inserts. Returns each
    pod's id, raw access token and private key (hex) for the generator."""
    import secrets
    from datetime import timedelta

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from django.conf import settings
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, RefreshToken, set_token_value

    from consent.models import DataSubject
    from pods.key_log import key_log_append
    from pods.models import Pod, PodToken, key_fingerprint
    from pods.services import pod_application

    application = pod_application()
    lifetime: Any = settings.OAUTH2_PROVIDER["ACCESS_TOKEN_EXPIRE_SECONDS"]
    expires = timezone.now() + timedelta(seconds=int(lifetime))
    keys = [Ed25519PrivateKey.generate() for _ in range(count)]
    raw = [secrets.token_urlsafe(32) for _ in range(count)]
    with transaction.atomic():
        users = User.objects.bulk_create(
            User(username=f"{prefix}-{i + 1:05d}", password=make_password(None))
            for i in range(count)
        )
        DataSubject.objects.bulk_create(DataSubject(user=user) for user in users)
        pods = Pod.objects.bulk_create(
            Pod(
                owner=user,
                name=f"{prefix}-pod-{i + 1:05d}",
                public_key=(public := key.public_key().public_bytes_raw()),
                fingerprint=key_fingerprint(public),
                agent_version="simulated",
                simulated=True,
                categories_held=[],
            )
            for i, (user, key) in enumerate(zip(users, keys, strict=True))
        )
        for pod in pods:
            key_log_append(pod=pod)
        accesses = []
        for user, token in zip(users, raw, strict=True):
            access = AccessToken(user=user, application=application, expires=expires, scope="pod")
            set_token_value(access, token)
            accesses.append(access)
        accesses = AccessToken.objects.bulk_create(accesses)
        refreshes = []
        for user, access in zip(users, accesses, strict=True):
            refresh = RefreshToken(user=user, application=application, access_token=access)
            set_token_value(refresh, secrets.token_urlsafe(32))
            refreshes.append(refresh)
        refreshes = RefreshToken.objects.bulk_create(refreshes)
        PodToken.objects.bulk_create(
            PodToken(pod=pod, access_token=access, refresh_token=refresh)
            for pod, access, refresh in zip(pods, accesses, refreshes, strict=True)
        )
    return [
        {"pod_id": str(pod.pk), "token": token, "key": key.private_bytes_raw().hex()}
        for pod, token, key in zip(pods, raw, keys, strict=True)
    ]


# -- the benchmark -------------------------------------------------------------------------------


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft limit on open files (inherited by the server and the
    generators) to the hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def parse_steps(text: str) -> list[int]:
    steps = [int(part) for part in text.split(",") if part.strip()]
    if not steps or steps != sorted(set(steps)) or steps[0] < 1:
        raise argparse.ArgumentTypeError("steps are increasing positive pod counts: 1000,5000")
    return steps


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _last_counts(path: Path) -> dict[str, int]:
    lines = path.read_text().strip().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {"connected": 0, "failed": 0}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dataspace.bench.children import (
        Child,
        Profiler,
        bench_server,
        bench_setup,
        usage,
        wait_for,
    )

    limit = raise_open_files(args.steps[-1] + 1000)
    if limit < args.steps[-1] + 100:
        raise SystemExit(f"open files are limited to {limit}: raise ulimit -Hn")
    data_dir = bench_setup("dataspace-idle-", POD_HEARTBEAT_TIMEOUT="90")
    from pods.agent.home import write_private
    from pods.presence import online_pods

    started = time.monotonic()
    credentials = provision_bulk(args.steps[-1], "idle")
    figures: dict[str, Any] = {
        "provision_s": round(time.monotonic() - started, 1),
        "open_files_limit": limit,
        "steps": [],
    }
    port, process, log = bench_server(data_dir)
    server = Child("server", process, log)
    children = [server]
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_answering(f"{url}/readyz", server.process, args.timeout):
            server.check()
            raise SystemExit("the server did not start")
        time.sleep(2)
        rss, cpu0 = usage(server.process.pid)
        time.sleep(args.baseline)
        rss, cpu1 = usage(server.process.pid)
        figures["baseline"] = {
            "server_rss_mib": round(rss, 1),
            "server_cpu_percent": round(100 * (cpu1 - cpu0) / args.baseline, 1),
            "load_average": load_average(),
        }
        held = 0
        for step, size in enumerate(args.steps):
            part = data_dir / f"generator-{step}.json"
            write_private(part, json.dumps(credentials[held:size]).encode())  # tokens, keys
            counts = data_dir / f"generator-{step}.jsonl"
            generator = Child(
                f"generator {step}",
                subprocess.Popen(  # noqa: S603
                    [
                        *(sys.executable, "-m", "dataspace.bench.idle", "--generator", str(part)),
                        *("--server", url, "--concurrency", str(args.concurrency)),
                    ],
                    cwd=ROOT,
                    stdout=counts.open("wb"),
                    stderr=(data_dir / f"generator-{step}.log").open("wb"),
                ),
                data_dir / f"generator-{step}.log",
            )
            children.append(generator)
            began = time.monotonic()

            def all_online(size: int = size) -> bool:
                return online_pods().count() >= size

            if not wait_for(all_online, args.timeout, children):
                raise SystemExit(f"only {online_pods().count()} of {size} pods connected")
            connect_s = time.monotonic() - began
            held = size
            time.sleep(args.settle)
            profiler = None
            if args.profile is not None and step == len(args.steps) - 1:
                log = data_dir / "py-spy.log"
                profiler = Profiler(server.process.pid, args.profile, log, gil=args.profile_gil)
            _, cpu0 = usage(server.process.pid)
            wait_for(lambda: False, args.hold, children)
            rss, cpu1 = usage(server.process.pid)
            if profiler is not None:
                profiler.stop()
            figures["steps"].append(
                {
                    "pods": size,
                    "connected": online_pods().count(),
                    "connect_s": round(connect_s, 1),
                    "server_rss_mib": round(rss, 1),
                    "server_rss_kib_per_pod": round(
                        (rss - figures["baseline"]["server_rss_mib"]) * 1024 / size, 1
                    ),
                    "server_cpu_percent": round(100 * (cpu1 - cpu0) / args.hold, 1),
                    "handshakes_failed": sum(
                        _last_counts(data_dir / f"generator-{i}.jsonl").get("failed", 0)
                        for i in range(step + 1)
                    ),
                    "load_average": load_average(),
                }
            )
            print(json.dumps(figures["steps"][-1]), file=sys.stderr, flush=True)
    finally:
        for child in reversed(children):
            _stop(child.process)
    return figures


def _stop(process: subprocess.Popen[bytes]) -> None:
    from dataspace.processes import stop

    stop(process, 60)


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dataspace.bench.idle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=parse_steps, default=[1000, 5000, 10000])
    parser.add_argument("--hold", type=float, default=60.0, help="seconds measured per step")
    parser.add_argument("--settle", type=float, default=25.0, help="seconds before measuring")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds with no pod")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="sample the server with py-spy (a dev dependency) over the last step's hold; "
        "collapsed stacks to PATH (flamegraph.pl, speedscope.app)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL",
    )
    parser.add_argument("--generator", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generator is not None:
        raise_open_files(100_000)
        pods = json.loads(args.generator.read_text())
        asyncio.run(generate(args.server, pods, args.concurrency))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
