"""``dataspace-pod simulate``: many pods in one asyncio process, for demos and load tests.

Each simulated pod is a real pod on the network: its own home (identity key, tokens, pinned
receipt key — made by ``manage.py provision_pods``), its own WebSocket and HTTP client, its own
partition of a bundled data set held in memory, and the same round worker as ``run``. Training
runs in worker threads so the event loop keeps every connection's heartbeat going.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, datasets
from .audit import verifier_for
from .channel import PodChannel, PodRevoked
from .controls import CONTROLS_DIR, ControlVariates
from .data import MemoryData
from .home import STATE_FILE, PodHome
from .rounds import RoundWorker, Vanish, channel_handler
from .service import PodService

Event = dict[str, Any]


@dataclass
class Stats:
    """What the simulation saw, for the progress line and the final summary (no secrets)."""

    pods: int
    connected: set[str] = field(default_factory=set)
    max_connected: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    declined: Counter[str] = field(default_factory=Counter)
    vanished: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    rounds: dict[int, str] = field(default_factory=dict)
    bytes_per_round: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        sent = self.bytes_per_round
        return {
            "pods": self.pods,
            "connected": len(self.connected),
            "max_connected": self.max_connected,
            "rounds_seen": len(self.rounds),
            "rounds_completed": sum(1 for s in self.rounds.values() if s == "completed"),
            "stages_answered": dict(self.stages),
            "declined": dict(self.declined),
            "vanished": dict(self.vanished),
            "failed": dict(self.failed),
            "bytes_sent_per_pod_round": round(sum(sent) / len(sent)) if sent else None,
            "elapsed_s": round(time.monotonic() - self.started, 1),
        }


class KillSwitch:
    """Makes the first COUNT pods that reach a stage vanish there (``--kill STAGE=COUNT``)."""

    def __init__(self, plan: dict[str, int]) -> None:
        self.left = dict(plan)

    def __call__(self, stage: str) -> bool:
        if self.left.get(stage, 0) > 0:
            self.left[stage] -= 1
            return True
        return False


def pod_speeds(count: int, slow_fraction: float, slow_speed: float, seed: int) -> list[float]:
    """Each pod's device speed (the share of the plan's local steps it manages per round):
    ``round(slow_fraction · count)`` pods drawn by ``seed`` run at ``slow_speed``, the rest at
    1. The same seed and homes give the same slow pods."""
    if not 0.0 <= slow_fraction <= 1.0:
        raise ValueError("--slow-fraction must be between 0 and 1")
    if not 0.0 < slow_speed <= 1.0:
        raise ValueError("--slow-speed must be above 0 and at most 1")
    slow = set(random.Random(f"speeds/{seed}").sample(range(count), round(slow_fraction * count)))
    return [slow_speed if i in slow else 1.0 for i in range(count)]


def parse_kills(values: list[str]) -> dict[str, int]:
    stages = ("advertise_keys", "share_keys", "masked_input", "unmask")
    plan: dict[str, int] = {}
    for value in values:
        stage, _, count = value.partition("=")
        if stage not in stages or not count.isdigit():
            raise ValueError(f"--kill takes STAGE=COUNT with STAGE one of {', '.join(stages)}")
        plan[stage] = plan.get(stage, 0) + int(count)
    return plan


CLAIM_FILE = "claimed"
# The claims this process holds: an open descriptor per home, with an exclusive lock on it.
_claims: dict[Path, int] = {}


def _claim(home: Path) -> bool:
    """Claim ``home`` for this process: an exclusive ``flock`` on its claim file, held for as
    long as the process lives. The kernel releases it when the process ends however it ends
    (a crash, ``kill -9``), so a restarted replica can claim the homes again — a claim that is
    only a file would outlive its holder. The file names the holder's PID for operators."""
    fd = os.open(home / CLAIM_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _claims[home] = fd
    return True


def pod_homes(root: Path, count: int, *, claim: bool = False) -> list[PodHome]:
    """The first ``count`` pod homes under ``root``; with ``claim``, homes no live simulator
    holds (each claimed with a lock the kernel drops when its holder dies; released on exit)."""
    homes = sorted(p for p in root.iterdir() if (p / STATE_FILE).exists()) if root.is_dir() else []
    chosen: list[Path] = []
    for home in homes:
        if len(chosen) == count:
            break
        if claim and not _claim(home):
            continue
        chosen.append(home)
    if len(chosen) < count:
        release(chosen if claim else [])
        free = "unclaimed " if claim else ""
        raise ValueError(
            f"{root} holds {len(chosen)} {free}pod homes, {count} asked for "
            "(make them with: manage.py provision_pods --count N --homes DIR --server URL)"
        )
    return [PodHome(p) for p in chosen]


def release(homes: list[Path]) -> None:
    """Give up this process's claims on ``homes``. The claim file stays: removing it could let
    two simulators lock two different files under one name."""
    for home in homes:
        fd = _claims.pop(home, None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the lock


def csv_partitions(
    service: PodService, source: DataSource, pods: int, seed: int
) -> tuple[str, list[MemoryData]]:
    """A CSV of any catalog category (read as ``import`` reads it), split IID across pods."""
    import numpy as np

    from .importer import ImportFailed, import_file

    categories = {c["slug"]: c for c in service.categories()}
    if source.category not in categories:
        raise ValueError(f"the service has no category {source.category}")
    fields = categories[source.category]["fields"]
    try:
        rows = import_file(source.csv, fields).rows
    except ImportFailed as exc:
        raise ValueError(f"{source.csv.name}: {exc}") from None
    if pods > len(rows):
        raise ValueError(f"{len(rows)} records cannot give {pods} pods one record each")
    order = np.random.default_rng(seed).permutation(len(rows))
    out = []
    for part in np.array_split(order, pods):
        chosen = [rows[i] for i in sorted(part)]
        columns = {f["name"]: [r.get(f["name"]) for r in chosen] for f in fields}
        out.append(MemoryData(source.category, columns, schema=fields))
    return source.category, out


@dataclass(frozen=True)
class DataSource:
    """``--csv FILE --category SLUG``: simulate pods over any category's records."""

    csv: Path
    category: str


def partitions(
    service: PodService, dataset_name: str | DataSource, pods: int, partition: str, seed: int
) -> tuple[str, list[MemoryData]]:
    """Each pod's share of the data set's pool (the held-out test split is never handed out)."""
    if isinstance(dataset_name, DataSource):
        return csv_partitions(service, dataset_name, pods, seed)
    dataset = datasets.load(dataset_name)
    categories = {c["slug"]: c for c in service.categories()}
    if dataset.category not in categories:
        raise ValueError(f"the service has no category {dataset.category}")
    names = [f["name"] for f in categories[dataset.category]["fields"]]
    features = [n for n in names if n != dataset.label]
    if len(features) != dataset.x.shape[1]:
        raise ValueError(f"{dataset.category} has {len(features)} features, the data set does not")
    pool, _test = datasets.split(dataset, seed=seed)
    parts = datasets.partition(
        dataset.y[pool], pods, alpha=datasets.parse_partition(partition), seed=seed
    )
    out = []
    for rows in parts:
        chosen = pool[rows]
        columns = {name: dataset.x[chosen, i] for i, name in enumerate(features)}
        columns[dataset.label] = dataset.y[chosen].astype(float)
        out.append(
            MemoryData(dataset.category, columns, schema=categories[dataset.category]["fields"])
        )
    return dataset.category, out


async def simulate(
    *,
    homes: list[PodHome],
    dataset: str | DataSource,
    partition: str,
    seed: int,
    kills: dict[str, int],
    duration: float,
    speeds: list[float] | None = None,
    report: Callable[[Event], None],
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    import torch
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # Many pods share a few cores: no oversubscription. One thread for torch's kernels, and one
    # for NumPy's BLAS too, whose idle worker threads otherwise spin after each call (a norm, a
    # product) while the pods' own threads wait for a core.
    torch.set_num_threads(1)
    threadpool_limits(1)
    states = [home.load_state() for home in homes]
    services = [PodService(home, state) for home, state in zip(homes, states, strict=True)]
    try:
        category, data = await asyncio.to_thread(
            partitions, services[0], dataset, len(homes), partition, seed
        )
        limit = asyncio.Semaphore(16)

        async def tell(service: PodService, part: MemoryData) -> None:
            async with limit:
                await asyncio.to_thread(service.report, {category: part.count()}, __version__)

        await asyncio.gather(*(tell(s, d) for s, d in zip(services, data, strict=True)))
        slow = sum(1 for s in speeds or [] if s < 1.0)
        report({"event": "reported", "pods": len(homes), "category": category, "slow": slow})
        kill = KillSwitch(kills)
        if duration > 0:
            asyncio.get_running_loop().call_later(duration, stop.set)
        rng = random.Random(seed)
        speeds = speeds or [1.0] * len(homes)
        events = LoopEvents()
        pump = asyncio.create_task(events.pump())
        try:
            await asyncio.gather(
                *(
                    _one_pod(
                        *(home, state, service, part, kill, stats, report, stop),
                        *(rng.random() * 2, speed, events),
                    )
                    for home, state, service, part, speed in zip(
                        homes, states, services, data, speeds, strict=True
                    )
                )
            )
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
    finally:
        for service in services:
            service.close()


class LoopEvents:
    """Events from the pods' worker threads to the event loop, in order, taken in batches a few
    times a second. Events only feed the statistics and the progress report; waking the loop
    for each (``call_soon_threadsafe`` writes to its self-pipe) cost a thousand pods several
    wakeups each per round. One instance serves every pod of a loop."""

    EVERY = 0.05  # seconds between batches

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[tuple[Callable[[Event], None], Event]] = []

    def put(self, handler: Callable[[Event], None], event: Event) -> None:
        with self.lock:
            self.waiting.append((handler, event))

    def drain(self) -> None:
        with self.lock:
            batch, self.waiting = self.waiting, []
        for handler, event in batch:
            handler(event)

    async def pump(self) -> None:
        """Drain every :attr:`EVERY` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.EVERY)
                self.drain()
        finally:
            self.drain()


async def _one_pod(
    home: PodHome,
    state: Any,
    service: PodService,
    data: MemoryData,
    kill: KillSwitch,
    stats: Stats,
    report: Callable[[Event], None],
    stop: asyncio.Event,
    delay: float,
    speed: float,
    events: LoopEvents,
) -> None:
    pod = state.pod_id

    def on_event(event: Event) -> None:
        kind = event.get("event")
        if kind == "connected":
            stats.connected.add(pod)
            stats.max_connected = max(stats.max_connected, len(stats.connected))
        elif kind == "disconnected":
            stats.connected.discard(pod)
        elif kind == "stage":
            stats.stages[event["stage"]] += 1
        elif kind == "declined":
            stats.declined[event["code"]] += 1
            report({"event": "declined", "round": event["round"], "code": event["code"]})
        elif kind == "aborted":
            stats.failed[f"aborted:{event['code']}"] += 1
            report(event)
        elif kind == "failed":
            stats.failed[f"{event['stage']}:{event['code']}"] += 1
            report(event)
        elif kind == "trained":  # the pod's own figures, never sent to the service
            report({**event, "pod": pod})
        elif kind == "round_end":
            stats.rounds[int(event["round"])] = str(event["status"])
            if event.get("status") == "completed" and event.get("bytes_sent"):
                stats.bytes_per_round.append(int(event["bytes_sent"]))
            report({"event": "round_end", "round": event["round"], "status": event["status"]})

    worker = RoundWorker(
        identity=home.identity(),
        transport=service,
        data=data,
        pinned_keys=state.receipt_keys,
        on_event=lambda e: events.put(on_event, e),
        vanish=kill,
        key_log=verifier_for(home.path, state.receipt_keys),
        controls=ControlVariates(home.path / CONTROLS_DIR),
        speed=speed,
    )
    await asyncio.sleep(delay)  # spread the first connections
    try:
        await PodChannel(
            home,
            state,
            service,
            on_event=on_event,
            handler=channel_handler(worker),
            on_welcome=worker.use_channel,
            max_delay=10.0,
        ).run(stop)
    except Vanish as gone:
        stats.connected.discard(pod)
        stats.vanished[str(gone)] += 1
        report({"event": "vanished", "stage": str(gone)})
    except PodRevoked:
        stats.connected.discard(pod)
        report({"event": "revoked"})


def main(args: Any, home_root: Path) -> dict[str, Any]:
    """Entry point for the CLI (``args`` from :func:`pods.agent.cli.build_parser`)."""
    homes = pod_homes(home_root, args.pods, claim=args.claim)
    speeds = pod_speeds(len(homes), args.slow_fraction, args.slow_speed, args.seed)
    stats = Stats(pods=len(homes))
    as_json: bool = args.json

    def report(event: Event) -> None:
        if as_json:
            print(json.dumps(event), flush=True)
        elif event.get("event") in ("round_end", "vanished", "reported"):
            print(" ".join(f"{k}={v}" for k, v in event.items()), flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def progress() -> None:
            from rich.console import Console

            console = Console(stderr=True)
            while not stop.is_set():
                await asyncio.sleep(args.stats_every)
                line = (
                    f"connected {len(stats.connected)}/{stats.pods} · rounds "
                    f"{sum(1 for s in stats.rounds.values() if s == 'completed')} done · "
                    f"answers {sum(stats.stages.values())} · vanished "
                    f"{sum(stats.vanished.values())}"
                )
                if as_json:
                    print(json.dumps({"event": "progress", **stats.summary()}), flush=True)
                else:
                    console.print(line, highlight=False)

        ticker = asyncio.create_task(progress())
        try:
            await simulate(
                homes=homes,
                dataset=DataSource(args.csv, args.category) if args.csv else args.dataset,
                partition=args.partition,
                seed=args.seed,
                kills=parse_kills(args.kill),
                duration=args.duration,
                speeds=speeds,
                report=report,
                stats=stats,
                stop=stop,
            )
        finally:
            ticker.cancel()

    try:
        asyncio.run(run())
    finally:
        if args.claim:
            release([home.path for home in homes])
    return {"simulated": True, **stats.summary()}
