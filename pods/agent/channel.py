"""The pod's control channel: connect, prove the identity key, heartbeat, and reconnect.

Reconnection uses capped exponential back-off with full jitter, so a restarted service is not
hit by every pod at once. A revoked pod (close code 4403) stops for good; an expired token
(4401) is refreshed once before trying again; a pod whose owner paused all training (4423)
retries at the longest delay until they resume.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Origin

from .home import PodHome, PodState
from .protocol import (
    PING_TEXT,
    WEIGHTS_FRAME,
    CloseCode,
    MessageType,
    challenge_message,
    read_weights_frame,
)
from .service import PodService, ServiceError

Event = dict[str, Any]
Handler = Callable[[Event, ClientConnection], Awaitable[None]]


class PodRevoked(Exception):
    """The service closed the channel because this pod was revoked."""


def websocket_url(server: str) -> str:
    if server.startswith("https://"):
        return "wss://" + server.removeprefix("https://") + "/ws/pods/"
    return "ws://" + server.removeprefix("http://") + "/ws/pods/"


# The largest weights frame a pod takes on its channel (its ``hello`` says so; bigger weights
# are downloaded). The service keeps weights up to 16 MiB in memory to frame them.
WEIGHTS_FRAME_BYTES = WEIGHTS_FRAME.size + (16 << 20)


def open_channel(server: str, **options: Any) -> connect:
    """How a pod opens its control channel (await it, or use it as an async context manager).
    No permessage-deflate: the channel carries small JSON messages and masked-input frames
    (random, incompressible), and a zlib context per connection costs memory at both ends — the
    service holds thousands. No
    protocol-level pings: the pod sends heartbeats at the interval the service's welcome gives.
    """
    return connect(
        websocket_url(server),
        origin=Origin(server),
        ping_interval=None,
        compression=None,
        max_size=WEIGHTS_FRAME_BYTES,
        **options,
    )


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base · 2^attempt)] (and at least 0.1 s)."""
    return max(0.1, rng.uniform(0, min(cap, base * 2**attempt)))


class PodChannel:
    def __init__(
        self,
        home: PodHome,
        state: PodState,
        service: PodService,
        *,
        on_event: Callable[[Event], None],
        handler: Handler | None = None,
        on_welcome: Callable[[Event], None] | None = None,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.home = home
        self.state = state
        self.service = service
        self.on_event = on_event
        self.handler = handler
        # Sees each connection's ``welcome`` (what the service offers on it: binary frames).
        self.on_welcome = on_welcome
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.rng = rng or random.SystemRandom()
        self.weights: dict[str, bytes] = {}  # weights frames by SHA-256, awaiting their task

    async def _handshake(self, ws: ClientConnection) -> Event:
        hello = {
            "type": MessageType.HELLO,
            "token": self.state.access_token,
            # The round's weights may come as a binary frame before the task (up to this size).
            "weights_frames": WEIGHTS_FRAME_BYTES,
        }
        await ws.send(json.dumps(hello))
        challenge = json.loads(await ws.recv())
        if (
            challenge.get("type") != MessageType.CHALLENGE
            or challenge.get("pod_id") != self.state.pod_id
        ):
            raise ServiceError("bad_challenge", "the service sent an unexpected challenge")
        nonce = base64.b64decode(challenge["nonce"])
        signature = self.home.identity().sign(challenge_message(nonce, self.state.pod_id))
        await ws.send(
            json.dumps(
                {"type": MessageType.PROVE, "signature": base64.b64encode(signature).decode()}
            )
        )
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != MessageType.WELCOME:
            raise ServiceError("bad_welcome", "the service did not accept the proof")
        return dict(welcome)

    async def _session(self, ws: ClientConnection, heartbeat: int, stop: asyncio.Event) -> None:
        async def pinger() -> None:
            while True:
                await asyncio.sleep(heartbeat)
                await ws.send(PING_TEXT)

        ping_task = asyncio.create_task(pinger())
        stop_task = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                recv_task = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait(
                    {recv_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
                )
                if recv_task not in done:
                    recv_task.cancel()
                    return
                data = recv_task.result()
                if isinstance(data, bytes):
                    self._keep_weights(data)
                    continue
                message = json.loads(data)
                self._hand_weights(message)
                if self.handler is not None:
                    await self.handler(message, ws)
                else:
                    self.on_event({"event": "message", "type": message.get("type")})
        finally:
            ping_task.cancel()
            stop_task.cancel()

    def _keep_weights(self, frame: bytes) -> None:
        """A binary frame from the service: weights that hash to what their header says are
        kept until the task naming them comes (the last two); anything else is ignored."""
        found = read_weights_frame(frame)
        if found is not None:
            sha256, blob = found
            self.weights[sha256] = blob
            while len(self.weights) > 2:
                del self.weights[next(iter(self.weights))]

    def _hand_weights(self, message: Event) -> None:
        """A task whose weights came as a frame: its download of them takes the frame's bytes
        (checked against the task's hash there, as downloaded ones are)."""
        task = message.get("task") if message.get("type") == MessageType.ROUND_STAGE else None
        if not isinstance(task, dict):
            return
        sha256, url = task.get("weights_sha256"), task.get("weights_url")
        blob = self.weights.pop(sha256, None) if isinstance(sha256, str) else None
        if blob is not None and isinstance(url, str):
            self.service.received(url, blob)

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        refreshed = False
        while not stop.is_set():
            try:
                async with open_channel(self.state.server) as ws:
                    welcome = await self._handshake(ws)
                    if self.on_welcome is not None:
                        self.on_welcome(welcome)
                    heartbeat = int(welcome.get("heartbeat", 20))
                    attempt, refreshed = 0, False
                    self.on_event({"event": "connected", "pod_id": self.state.pod_id})
                    await self._session(ws, heartbeat, stop)
                    await ws.close()
                    if stop.is_set():
                        return
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                self.on_event({"event": "disconnected", "code": code})
                if code == CloseCode.FORBIDDEN:
                    raise PodRevoked() from None
                if code == CloseCode.PAUSED:
                    attempt = max(attempt, 16)  # straight to the longest back-off
                if code == CloseCode.UNAUTHENTICATED and not refreshed and self.state.refresh_token:
                    refreshed = True
                    try:
                        await asyncio.to_thread(self.service.refresh)
                        continue
                    except ServiceError as error:
                        if error.code == "invalid_grant":
                            raise PodRevoked() from None
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ServiceError) as exc:
                self.on_event({"event": "disconnected", "reason": exc.__class__.__name__})
            delay = backoff_delay(attempt, base=self.base_delay, cap=self.max_delay, rng=self.rng)
            attempt += 1
            self.on_event({"event": "retrying", "in_s": round(delay, 2)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
