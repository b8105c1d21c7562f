"""Idle soak: N pods held connected over the Redis channel layer to two web processes.

Starts two uvicorn processes on Redis (channel layer, cache) and DATABASE_URL (or a SQLite file
in a temporary data directory), provisions N pods (half pinned to each process) and keeps them
connected, idle on heartbeats, for ``--duration`` seconds. A dropped connection is any
disconnection a pod sees (issue 12: on redis-py's 5 s socket timeout every idle socket dropped
every 5–7 s); the expected count is 0. Prints one JSON object: connections made, drops, the
fewest pods the service saw online while they were all held, and each web process's memory
and idle CPU. Example::

    REDIS_URL=redis://127.0.0.1:6379/14 python -m dataspace.bench.soak --pods 40 --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataspace.bench.children import ROOT, bench_setup, usage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=40, help="pods held connected (default 40)")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds to hold them (default 600)"
    )
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.pods < 2 or args.duration <= 0:
        parser.error("--pods must be at least 2 and --duration positive")
    if not os.environ.get("REDIS_URL"):
        raise SystemExit("the soak measures the Redis channel layer: set REDIS_URL")

    data_dir = bench_setup("dataspace-soak-")
    from django.core.management import call_command

    from dataspace.processes import free_port, server_command, stop, wait_answering
    from pods.presence import online_pods

    servers: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for n in range(2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            servers.append(
                subprocess.Popen(  # noqa: S603
                    server_command(port, "--log-level", "warning"),
                    cwd=ROOT,
                    env={
                        **os.environ,
                        "ROUNDS_TICK_IN_PROCESS": "0",  # idle: no rounds, no clock
                        "SITE_URL": url,
                        "DEBUG": "0",
                        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
                        "ALLOWED_HOSTS": "127.0.0.1,localhost",
                    },
                    stdout=(data_dir / f"web{n}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(url)
        for url, server in zip(urls, servers, strict=True):
            if not wait_answering(f"{url}/readyz", server):
                raise SystemExit(f"a web process did not start; see {data_dir}")
        prefix = f"soak{os.getpid()}"
        for n, url in enumerate(urls):
            call_command(
                "provision_pods",
                "--simulated",
                count=args.pods // 2 + (args.pods % 2 if n == 0 else 0),
                homes=data_dir / f"pods-{n}",
                server=url,
                prefix=f"{prefix}-{n}",
                stdout=open(os.devnull, "w"),  # noqa: SIM115
            )
        mine = online_pods().filter(name__startswith=prefix)
        cpu0 = [usage(s.pid)[1] for s in servers]
        figures = asyncio.run(_hold(data_dir, args, lambda: mine.count()))
        cpu1 = [usage(s.pid) for s in servers]
        figures.update(
            {
                "web_rss_mib": [round(mb, 1) for mb, _ in cpu1],
                "web_cpu_percent": [
                    round(100 * (cpu - before) / figures["duration_s"], 1)
                    for (_, cpu), before in zip(cpu1, cpu0, strict=True)
                ],
                "data_dir": str(data_dir),
            }
        )
    finally:
        for server in servers:
            stop(server, 30)
    print(json.dumps(figures))
    return 0 if figures["dropped"] == 0 else 1


async def _hold(data_dir: Path, args: Any, online: Any) -> dict[str, Any]:
    """Run every pod's control channel; count connections and drops; sample who is online."""
    from pods.agent.channel import PodChannel
    from pods.agent.home import STATE_FILE, PodHome
    from pods.agent.service import PodService

    homes = [PodHome(p) for p in sorted(data_dir.glob("pods-*/*")) if (p / STATE_FILE).exists()]
    events: Counter[str] = Counter()
    connected: set[str] = set()
    stop = asyncio.Event()
    services = []
    tasks = []
    for home in homes:
        state = home.load_state()
        service = PodService(home, state)
        services.append(service)

        def on_event(event: dict[str, Any], pod: str = state.pod_id) -> None:
            kind = str(event.get("event"))
            events[kind] += 1
            if kind == "connected":
                connected.add(pod)
            elif kind == "disconnected":
                connected.discard(pod)

        channel = PodChannel(home, state, service, on_event=on_event, max_delay=10.0)
        tasks.append(asyncio.create_task(channel.run(stop)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    while len(connected) < len(homes):
        if loop.time() - started > args.connect_timeout:
            raise SystemExit(f"only {len(connected)} of {len(homes)} pods connected")
        await asyncio.sleep(0.2)
    connect_s = loop.time() - started
    base = Counter(events)  # drops count from here: every pod is connected
    fewest = len(homes)
    held = loop.time()
    while loop.time() - held < args.duration:
        await asyncio.sleep(min(5.0, args.duration))
        fewest = min(fewest, await asyncio.to_thread(online))
    duration = loop.time() - held
    reconnects = events["connected"] - base["connected"]
    dropped = events["disconnected"] - base["disconnected"]
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for service in services:
        service.close()
    return {
        "pods": len(homes),
        "web_processes": 2,
        "connect_all_s": round(connect_s, 1),
        "duration_s": round(duration, 1),
        "connections": len(homes) + reconnects,
        "dropped": dropped,
        "fewest_online": fewest,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


if __name__ == "__main__":
    sys.exit(main())
