"""A benchmark's child processes: its data directory and Django set-up, a server process, and
waiting on children that fail fast (a child that exits ends the wait with its log's last lines);
their memory and CPU from /proc. Shared by every benchmark that runs real processes."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dataspace.processes import free_port, server_command, wait_until

ROOT = Path(__file__).resolve().parents[2]  # the repository: servers start from there


class ChildExited(SystemExit):
    """A child process (the server or the simulator) ended while the benchmark waited on it."""


@dataclass
class Child:
    """A child process the benchmark waits on, and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """Raise :class:`ChildExited` (with the log's last lines) if the process has ended."""
        code = self.process.poll()
        if code is None:
            return
        tail = ""
        if self.log.exists():
            lines = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            tail = "".join(f"\n  {line}" for line in lines)
        raise ChildExited(f"the {self.name} exited with status {code} (log: {self.log}){tail}")


def wait_for(
    predicate: Callable[[], object], timeout: float, children: list[Child], every: float = 0.5
) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False); a
    child that exits meanwhile raises :class:`ChildExited` at once."""

    def done() -> object:
        for child in children:
            child.check()
        return predicate()

    return wait_until(done, timeout, every)


def usage(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of a process, from /proc."""
    if not Path(f"/proc/{pid}/status").exists():
        raise ChildExited(f"process {pid} has exited; see the logs in DATASPACE_DATA_DIR")
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks


def usage_sum(children: list[Child]) -> tuple[float, float]:
    """:func:`usage` summed over processes: (RSS MiB, CPU seconds)."""
    each = [usage(child.process.pid) for child in children]
    return sum(mb for mb, _ in each), sum(cpu for _, cpu in each)


def host_reference_s() -> float:
    """Seconds this host takes for a fixed piece of plain Python (a loop and JSON encoding: the
    kind of work the service does per message), best of three: benchmark figures from hosts of
    different speed compare once divided by it (0.63-0.65 s on the 2-core host of December 2026)."""
    record = {"stage": "masked_input", "round": 12, "pods": list(range(30)), "hash": "ab" * 32}
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(range(3_000_000))
        for _ in range(50_000):
            json.loads(json.dumps(record))
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


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


def bench_server(data_dir: Path) -> tuple[int, subprocess.Popen[bytes], Path]:
    """A server process on a free port, its rounds clock in-process, logging to
    ``data_dir/server.log``: (port, process, log path). It runs as in production (DEBUG off: no
    per-query bookkeeping)."""
    port = free_port()
    log = data_dir / "server.log"
    process = subprocess.Popen(  # noqa: S603
        server_command(port, "--log-level", "warning"),
        cwd=ROOT,
        env={
            **os.environ,
            "ROUNDS_TICK_IN_PROCESS": "1",
            "SITE_URL": f"http://127.0.0.1:{port}",
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return port, process, log


class Profiler:
    """py-spy (a dev dependency) sampling one process until :meth:`stop`: collapsed stacks to
    ``output`` (flamegraph.pl, speedscope.app). ``gil``: only the thread holding the GIL (the
    process's Python CPU; threads waiting for the GIL are otherwise sampled as busy)."""

    def __init__(self, pid: int, output: Path, log: Path, *, gil: bool = False) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [
                *(str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking"),
                *(["--gil"] if gil else []),
                *("--pid", str(pid), "--rate", "200", "--format", "raw"),
                *("--output", str(output)),
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self.process.wait(60)
