"""Child processes for the commands that run the service and pods side by side: the demo, the
federation benchmark and the end-to-end tests. No Django import: safe anywhere."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

# How the service's uvicorn serves WebSockets (also in docker/compose.yaml, docker/Dockerfile and
# `make serve`). No permessage-deflate: the control channel carries small JSON (bulk tensors go
# over HTTP), and each connection's zlib contexts cost the server ~40 KiB (10,000 idle pods: 1.1
# GiB resident with it, 0.7 without). Protocol pings every 60 s instead of 20: pods already
# heartbeat every POD_HEARTBEAT_INTERVAL; these only find peers gone without a close.
WEBSOCKET_OPTIONS = ("--ws-per-message-deflate", "false", "--ws-ping-interval", "60")


def server_command(port: int, *options: str, app: str = "dataspace.asgi:application") -> list[str]:
    """The service as one ASGI server process on 127.0.0.1:``port`` (uvicorn, this interpreter)."""
    return [
        *(sys.executable, "-m", "uvicorn", app),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
        *(*WEBSOCKET_OPTIONS, *options),
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, every: float = 0.5) -> bool:
    """Poll ``predicate`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_answering(url: str, process: subprocess.Popen[Any], timeout: float = 60.0) -> bool:
    """Wait for a server process to answer ``url``; False if it exited or never answered."""
    return wait_until(lambda: process.poll() is not None or answers(url), timeout, 0.3) and (
        process.poll() is None
    )


def stop(process: subprocess.Popen[Any] | None, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; nothing if it already ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
