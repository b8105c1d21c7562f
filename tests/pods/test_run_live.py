"""`dataspace-pod run` against a live server process: connect, survive a restart, stop on revoke."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from pods.agent.home import PodHome, PodState
from pods.key_log import key_log_append
from pods.models import Pod, PodToken, key_fingerprint
from pods.services import pod_application, pod_revoke
from tests.factories import UserFactory
from tests.live import LiveService, on_test_database, pod_command

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    # Revocation reaches the server process's connection through the shared (Redis) layer.
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis as the channel layer"),
]


def events(process: subprocess.Popen[str]) -> queue.Queue[dict[str, Any]]:
    out: queue.Queue[dict[str, Any]] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            out.put(json.loads(line))

    threading.Thread(target=pump, daemon=True).start()
    return out


def wait_for(q: queue.Queue[dict[str, Any]], name: str, timeout: float = 60) -> dict[str, Any]:
    while True:
        event = q.get(timeout=timeout)
        if event.get("event") == name:
            return event


def paired_home(tmp_path: Path, server: str) -> tuple[PodHome, Pod]:
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import AccessToken

    home = PodHome(tmp_path / "pod")
    public = home.public_key()
    owner = UserFactory()
    pod = Pod.objects.create(
        owner=owner, name="Runner", public_key=public, fingerprint=key_fingerprint(public)
    )
    token = AccessToken.objects.create(
        application=pod_application(),
        user=owner,
        token="run-token",
        scope="pod",
        expires=timezone.now() + timedelta(hours=1),
    )
    PodToken.objects.create(pod=pod, access_token=token)
    key_log_append(pod=pod)
    home.save_state(
        PodState(
            server=server,
            pod_id=str(pod.pk),
            name="Runner",
            access_token="run-token",
            refresh_token="unused",
        )
    )
    return home, pod


def test_run_reconnects_after_a_restart_and_stops_when_revoked(tmp_path: Path) -> None:
    def server(port: int | None = None) -> LiveService:
        return on_test_database(tmp_path, port=port).start()

    first = server()
    home, pod = paired_home(tmp_path, first.url)
    process = subprocess.Popen(
        [
            *pod_command(),
            "--home",
            str(home.path),
            "--json",
            "run",
            "--max-backoff",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        q = events(process)
        assert wait_for(q, "connected")["pod_id"] == str(pod.pk)
        pod.refresh_from_db()
        assert pod.channel_name

        first.stop()  # the service goes away…
        wait_for(q, "disconnected")
        wait_for(q, "retrying")
        second = server(port=first.port)  # …and comes back on the same address
        try:
            wait_for(q, "connected")
            pod_revoke(user=pod.owner, pod=pod)
            assert wait_for(q, "disconnected")["code"] == 4403
            _, err = process.communicate(timeout=30)
            assert process.returncode == 1
            assert "revoked" in err
        finally:
            second.stop()
    finally:
        if process.poll() is None:
            process.kill()
