"""A real server process (uvicorn, the ASGI app) on the test database, for end-to-end tests."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from dataspace.processes import free_port, server_command, stop

ROOT = Path(__file__).resolve().parent.parent


def pod_command() -> list[str]:
    """How live tests start ``dataspace-pod``. ``make test`` sets DATASPACE_POD_BIN to the one in
    the pod-only venv (``make test-pod``): the pods then run, round after round, where Django and
    the rest of the server stack are not even installed. Otherwise: this checkout's agent."""
    installed = os.environ.get("DATASPACE_POD_BIN")
    return [installed] if installed else [sys.executable, "-m", "pods.agent.cli"]


def database_url(settings_dict: dict[str, Any]) -> str:
    if "sqlite" in settings_dict["ENGINE"]:  # Django's backend or dataspace.sqlite_pool
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


class LiveService:
    """Starts ``uvicorn dataspace.asgi:application`` and waits until ``/healthz`` answers."""

    def __init__(
        self,
        *,
        settings_dict: dict[str, Any],
        receipt_key: bytes,
        data_dir: Path,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
        app: str = "dataspace.asgi:application",
    ) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}},
            "DATABASE_URL": database_url(settings_dict),
            "SECRET_KEY": "live-test-secret-key",
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SITE_URL": self.url,
            "RECEIPT_SIGNING_KEY": base64.b64encode(receipt_key).decode(),
            "DATASPACE_DATA_DIR": str(data_dir),
            "MEDIA_ROOT": str(data_dir / "media"),
            "SECURE_COOKIES": "0",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveService:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            server_command(self.port, app=self.app),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start within 60 s")

    def stop(self) -> None:
        stop(self.process, 15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def on_test_database(
    data_dir: Path,
    *,
    port: int | None = None,
    app: str = "dataspace.asgi:application",
    **extra_env: str,
) -> LiveService:
    """A server (not started) on the test database, signing receipts with the tests' key."""
    from django.db import connection

    from tests.conftest import TEST_RECEIPT_KEY

    return LiveService(
        settings_dict=connection.settings_dict,
        receipt_key=TEST_RECEIPT_KEY.private_bytes_raw(),
        data_dir=data_dir,
        extra_env=extra_env,
        port=port,
        app=app,
    )


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test
    with "timed out waiting for <what>" after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def consenting_simulated_pods(
    model_request: Any, server_url: str, homes: Path, count: int
) -> list[Any]:
    """``count`` simulated pods (``provision_pods``) whose owners all consented to the request."""
    import io

    from django.core.management import call_command

    from consent.services import consent_grant
    from pods.models import Pod

    call_command(
        "provision_pods",
        simulated=True,
        count=count,
        homes=homes,
        server=server_url,
        stdout=io.StringIO(),
    )
    pods = list(Pod.objects.filter(name__startswith="sim-pod-"))
    for pod in pods:
        consent_grant(user=pod.owner, model_request=model_request, pod=pod)
    return pods


def simulator(homes: Path, count: int, log: Path, *options: str) -> subprocess.Popen[str]:
    """``dataspace-pod --json simulate`` over ``homes`` (breast screening), events on stdout."""
    return subprocess.Popen(
        [
            *(*pod_command(), "--json", "simulate"),
            *("--pods", str(count), "--homes", str(homes), "--dataset", "breast_screening"),
            *("--duration", "60", "--stats-every", "3600", *options),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        text=True,
    )
