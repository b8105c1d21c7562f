"""An idle pod connection on the Redis channel layer stays up (issue 12, defect 1).

channels-redis waits for the next channel message with a blocking ``BZPOPMIN`` of 5 s; redis-py's
default ``socket_timeout`` is also 5 s, so every idle receive used to end in
``redis.exceptions.TimeoutError`` → "Exception in ASGI application" → the socket closed and the
pod reconnected every 5–7 s. The in-memory layer hides this: only a real server process on the
Redis layer shows it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Origin

from pods.agent.protocol import PING_TEXT, MessageType, challenge_message
from tests.live import on_test_database
from tests.pods.conftest import make_paired_pod

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis as the channel layer"),
]

IDLE_SECONDS = 17.0  # more than three of channels-redis's 5 s blocking receives


def test_an_idle_pod_connection_on_the_redis_layer_is_not_dropped(tmp_path: Path) -> None:
    # Given a real server process on the Redis channel layer and a paired pod connected to it
    service = on_test_database(tmp_path, POD_HEARTBEAT_TIMEOUT="120").start()
    try:
        paired = make_paired_pod()
        url = service.url.replace("http://", "ws://") + "/ws/pods/"
        with connect(url, origin=Origin(service.url), open_timeout=10) as ws:
            ws.send(json.dumps({"type": MessageType.HELLO, "token": paired.token}))
            challenge = json.loads(ws.recv(timeout=10))
            nonce = base64.b64decode(challenge["nonce"])
            signature = paired.key.sign(challenge_message(nonce, str(paired.pod.pk)))
            ws.send(
                json.dumps(
                    {"type": MessageType.PROVE, "signature": base64.b64encode(signature).decode()}
                )
            )
            assert json.loads(ws.recv(timeout=10))["type"] == MessageType.WELCOME

            # When the connection stays idle for longer than several blocking receives
            started = time.monotonic()
            try:
                message = ws.recv(timeout=IDLE_SECONDS)
            except TimeoutError:
                message = None
            except ConnectionClosed as closed:
                pytest.fail(
                    f"idle connection closed after {time.monotonic() - started:.1f} s "
                    f"(code {closed.rcvd.code if closed.rcvd else None})"
                )

            # Then nothing arrived, the socket is still open and the pod's heartbeat is written
            assert message is None
            assert ws.ping().wait(timeout=10)
            paired.pod.refresh_from_db()
            before = paired.pod.last_seen_at
            ws.send(PING_TEXT)
            deadline = time.monotonic() + 15  # the server writes heartbeats every few seconds
            while paired.pod.last_seen_at == before and time.monotonic() < deadline:
                time.sleep(0.5)
                paired.pod.refresh_from_db()
            assert paired.pod.last_seen_at != before
    finally:
        service.stop()
    log = service.log()
    assert "Exception in ASGI application" not in log
    assert "TimeoutError" not in log
