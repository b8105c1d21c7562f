"""The pod control channel (``/ws/pods/``): authenticate, prove the identity key, then relay.

Connection states, in order: ``AWAIT_HELLO`` (bearer token) → ``AWAIT_PROOF`` (Ed25519
signature over a fresh nonce) → ``READY``. Any message out of order, of an unknown type or
malformed closes the connection with a specific code. Training messages in ``READY`` go to the
rounds engine; round events reach the pod through its channel-layer group.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import logging
from datetime import datetime
from typing import Any, ClassVar

from channels.db import database_sync_to_async
from django.conf import settings

from dataspace.consumers import TypedJsonConsumer
from dataspace.delivery import pod_group, task_weights
from pods.agent.protocol import (
    PING_TEXT,
    CloseCode,
    MessageType,
    challenge_message,
    read_masked_frame,
    weights_frame,
)
from training import downloads
from training.rounds import answers, messages, uploads
from training.rounds.clock import ensure_running

from . import live_tokens, presence
from .batching import Batcher
from .services import verify_signature

logger = logging.getLogger(__name__)


Close = CloseCode


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_PROOF = "await_proof"
    READY = "ready"


class PodConsumer(TypedJsonConsumer):
    handlers: ClassVar[dict[tuple[Any, str], str]] = {
        (State.AWAIT_HELLO, "hello"): "on_hello",
        (State.AWAIT_PROOF, "prove"): "on_prove",
        (State.READY, "ping"): "on_ping",  # a heartbeat written otherwise than PING_TEXT
        (State.READY, "round.reply"): "on_round_reply",
        (State.READY, "round.decline"): "on_round_decline",
    }
    state: State
    closed: bool = False
    pod_id: str | None
    nonce: bytes | None
    token_checksum: str
    token_expires: datetime

    async def connect(self) -> None:
        self.state = State.AWAIT_HELLO
        self.closed = False
        self.pod_id = None
        self.nonce = None
        self.public_key: bytes = b""
        self.weights_limit = 0  # the largest weights frame the pod takes (0: none)
        self.weights_sent = ""  # the SHA-256 of the last weights framed on this connection
        await self.accept()
        ensure_running()  # the embedded default's rounds clock, on this process's loop
        self._auth_timer = asyncio.get_running_loop().call_later(
            settings.POD_AUTH_TIMEOUT, lambda: asyncio.ensure_future(self._auth_timeout())
        )

    async def _auth_timeout(self) -> None:
        if self.state is not State.READY:
            await self.close(code=Close.TIMEOUT)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close once; a handshake step that was waiting on the database meanwhile (the auth
        timer runs beside it) sees ``closed`` and stops instead of sending on a closed socket
        (an error that skipped this connection's clean-up)."""
        if self.closed:
            return
        self.closed = True
        await super().close(code=code, reason=reason)

    async def disconnect(self, code: int) -> None:
        self._auth_timer.cancel()
        live_tokens.unbind(self.channel_name)
        if self.pod_id is not None and self.state is State.READY:
            await self.channel_layer.group_discard(pod_group(self.pod_id), self.channel_name)
            await database_sync_to_async(presence.mark_offline)(
                pod_id=self.pod_id, channel_name=self.channel_name
            )

    # -- handshake -------------------------------------------------------------------------------

    async def on_hello(self, content: dict[str, Any]) -> None:
        token = content.get("token")
        found = (
            await database_sync_to_async(presence.pod_and_expiry_for_bearer)(token)
            if isinstance(token, str)
            else None
        )
        if self.closed:  # the auth timer closed the connection while the token was looked up
            return
        if found is None or not isinstance(token, str):
            await self.close(code=Close.UNAUTHENTICATED)
            return
        pod, self.token_expires = found
        limit = content.get("weights_frames")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self.weights_limit = limit
        self.token_checksum = live_tokens.checksum(token)
        self.pod_id = str(pod.pk)
        self.public_key = bytes(pod.public_key)
        self.nonce = presence.new_nonce()
        self.state = State.AWAIT_PROOF
        await self.send_json(
            {
                "type": "challenge",
                "nonce": base64.b64encode(self.nonce).decode(),
                "pod_id": self.pod_id,
            }
        )

    async def on_prove(self, content: dict[str, Any]) -> None:
        assert self.nonce is not None and self.pod_id is not None
        try:
            signature = base64.b64decode(str(content.get("signature", "")), validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        nonce, self.nonce = self.nonce, None  # a nonce answers one proof only
        if not verify_signature(self.public_key, signature, challenge_message(nonce, self.pod_id)):
            await self.close(code=Close.UNAUTHENTICATED)
            return
        paused = await database_sync_to_async(presence.owner_paused)(self.pod_id)
        if self.closed:  # timed out meanwhile: this connection is not the pod's
            return
        if paused:
            await self.close(code=Close.PAUSED)
            return
        self.state = State.READY
        self._auth_timer.cancel()
        # The round's downloads and uploads with this token skip the token table meanwhile.
        live_tokens.bind(
            self.token_checksum,
            live_tokens.LivePod(self.pod_id, self.token_expires, self.channel_name),
        )
        await self.channel_layer.group_add(pod_group(self.pod_id), self.channel_name)
        replaced = await database_sync_to_async(presence.mark_online)(
            pod_id=self.pod_id, channel_name=self.channel_name
        )
        if replaced:
            await self.channel_layer.send(
                replaced, {"type": "pod.close", "code": int(Close.REPLACED)}
            )
        await self.send_json(
            {
                "type": "welcome",
                "pod_id": self.pod_id,
                "heartbeat": settings.POD_HEARTBEAT_INTERVAL,
                # Masked inputs up to this size may come as binary frames on this channel.
                "masked_frames": settings.POD_MASKED_FRAME_BYTES,
            }
        )
        # A stage the pod has not answered yet (it was offline, or this server restarted).
        for message in await database_sync_to_async(messages.stage_messages_for)(self.pod_id):
            weights = task_weights(message)
            if weights is not None:
                await self.send_weights(weights)
            await self.send_json(message)

    async def on_ping(self, content: dict[str, Any] | None = None) -> None:
        """A heartbeat: noted, written with the others of the moment, and not answered (no pod
        read the ``pong`` it once got, which was a fifth of an idle server's CPU)."""
        assert self.pod_id is not None
        heartbeats.note(self.pod_id, self.channel_name)

    async def on_round_reply(self, content: dict[str, Any]) -> None:
        """A stage reply (advertise_keys, share_keys, unmask) goes to the rounds engine."""
        round_id, stage = content.get("round"), content.get("stage")
        if (
            not isinstance(round_id, int)
            or isinstance(round_id, bool)
            or not isinstance(stage, str)
        ):
            await self.close(code=Close.PROTOCOL)
            return
        assert self.pod_id is not None
        # With every other connection's answers of the moment: one transaction per round.
        accepted = await stage_replies.submit(
            answers.StageReply(self.pod_id, round_id, stage, content.get("payload"))
        )
        if not accepted:
            await self.send_json({"type": "error", "code": "unknown_round", "round": round_id})

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Text frames are JSON messages (a heartbeat known by its text alone); a binary frame is
        a masked input (READY only)."""
        if text_data == PING_TEXT and self.state is State.READY:
            await self.on_ping()
        elif bytes_data is None:
            await super().receive(text_data=text_data, **kwargs)
        elif self.state is State.READY and len(bytes_data) <= settings.POD_MASKED_FRAME_BYTES:
            await self.on_masked_frame(bytes_data)
        else:
            await self.refuse()

    async def on_masked_frame(self, frame: bytes) -> None:
        """A masked input on the channel: stored with every other connection's of the moment
        (one transaction per round), then acknowledged or refused with the HTTP upload's code."""
        assert self.pod_id is not None
        try:
            round_id, sha256, body = read_masked_frame(frame)
        except ValueError:
            await self.refuse()
            return
        code = await masked_frames.submit(uploads.MaskedFrame(self.pod_id, round_id, sha256, body))
        if code is None:
            await self.send_json({"type": MessageType.ROUND_STORED, "round": round_id})
        else:
            await self.send_json({"type": MessageType.ERROR, "code": code, "round": round_id})

    async def on_round_decline(self, content: dict[str, Any]) -> None:
        """The pod refuses a task (its own consent check failed, or it holds no such data)."""
        round_id, code = content.get("round"), content.get("code")
        if (
            not isinstance(round_id, int)
            or isinstance(round_id, bool)
            or not isinstance(code, str)
            or not code.replace("_", "").isalnum()
            or len(code) > 64
        ):
            await self.close(code=Close.PROTOCOL)
            return
        accepted = await database_sync_to_async(_round_decline)(self.pod_id, round_id, code)
        if not accepted:
            await self.send_json({"type": "error", "code": "unknown_round", "round": round_id})

    # -- events from the channel layer -----------------------------------------------------------

    async def pod_close(self, event: dict[str, Any]) -> None:
        await self.close(code=int(event.get("code", Close.FORBIDDEN)))

    async def pod_send(self, event: dict[str, Any]) -> None:
        """Forward a server message (a round stage) to the pod: its JSON text, encoded once by
        the sender (:func:`dataspace.delivery.wire_event`), or the message itself."""
        if self.state is not State.READY:
            return
        weights = event.get("weights")
        if isinstance(weights, str):
            await self.send_weights(weights)
        text = event.get("text")
        if isinstance(text, str):
            await self.send(text_data=text)
        else:
            await self.send_json(event["message"])

    async def send_weights(self, sha256: str) -> None:
        """The weights a task names, as one binary frame before the task, to a pod that takes
        them so (its ``hello``): read once per process and kept in memory, framed once per
        version; once per connection (the clock asking a slow pod again sends the task alone:
        the pod holds the weights). Best effort: without the frame the pod downloads them."""
        if not self.weights_limit or sha256 == self.weights_sent:
            return
        try:
            frame = await _weights_frames.frame(sha256)
            if frame is not None and len(frame) <= self.weights_limit and not self.closed:
                self.weights_sent = sha256
                await self.send(bytes_data=frame)
        except Exception:
            logger.warning("weights frame not sent", exc_info=True)


class WeightsFrames:
    """The last few weights frames this process built (a cohort's task names one version):
    the first connection to need one reads it (once: the rest of the cohort, asking at the
    same moment, wait for that read rather than each making its own)."""

    def __init__(self, kept: int = 2) -> None:
        self.kept = kept
        self.frames: dict[str, bytes] = {}
        self.reading: dict[str, asyncio.Future[bytes | None]] = {}

    async def frame(self, sha256: str) -> bytes | None:
        frame = self.frames.get(sha256)
        if frame is not None:
            return frame
        loop = asyncio.get_running_loop()
        reading = self.reading.get(sha256)
        if reading is None or reading.get_loop() is not loop:
            reading = self.reading[sha256] = loop.create_task(self._read(sha256))
        return await asyncio.shield(reading)

    async def _read(self, sha256: str) -> bytes | None:
        try:
            blob = downloads.cached_weights(sha256)
            if blob is None:
                blob = await database_sync_to_async(downloads.stored_weights)(sha256)
            if blob is None:
                return None
            frame = self.frames[sha256] = weights_frame(blob, sha256)
            while len(self.frames) > self.kept:
                del self.frames[next(iter(self.frames))]
            return frame
        finally:
            self.reading.pop(sha256, None)


_weights_frames = WeightsFrames()


class Heartbeats:
    """This process's heartbeats not yet written: one UPDATE for all of them every few seconds
    (one per ping cost each idle pod a database connection and a write every interval)."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None

    def note(self, pod_id: str, channel_name: str) -> None:
        self.seen[pod_id] = channel_name
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._flush_every(self.every()))

    @staticmethod
    def every() -> float:
        """Seconds between writes: well inside the timeout that declares a silent pod gone."""
        return float(min(5.0, settings.POD_HEARTBEAT_TIMEOUT / 6))

    async def _flush_every(self, seconds: float) -> None:
        while self.seen:
            await asyncio.sleep(seconds)
            await self.flush()

    async def flush(self) -> None:
        batch, self.seen = self.seen, {}
        if batch:
            try:
                await database_sync_to_async(presence.mark_seen_many)(batch)
            except Exception:
                logger.exception("heartbeats of %d pods not written", len(batch))


heartbeats = Heartbeats()


# This process's stage answers, recorded in batches (a revoked pod's connection is closed at
# once; the stage's close re-checks every pod's status).
stage_replies: Batcher[answers.StageReply, bool] = Batcher(
    answers.round_replies, gather=settings.POD_BATCH_GATHER_MS / 1000
)
# Masked inputs that came as binary frames, stored in batches (a few MiB each at most).
masked_frames: Batcher[uploads.MaskedFrame, str | None] = Batcher(
    uploads.masked_frames_store, most=64, gather=settings.POD_BATCH_GATHER_MS / 1000
)


def _round_decline(pod_id: str | None, round_id: int, code: str) -> bool:
    if pod_id is None:
        return False
    return answers.round_decline(pod_id=pod_id, round_id=round_id, code=code)
