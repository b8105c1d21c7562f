"""Live progress of one model request (``/ws/requests/<uuid>/``), read-only, over Channels.

Two kinds of subscriber, both ending in the same ``READY`` state:

- a portal user, authenticated by the session cookie (``AuthMiddlewareStack``), may follow any
  request that is not a draft;
- a provider, with no session, sends ``{"type": "hello", "token": "<access token>"}`` first; the
  token must be a live access token of one of the provider's OAuth2 clients carrying
  ``requests:read``, and the request must be that provider's (another provider's request is
  "not found", as in the REST API).

On ``READY`` the consumer sends a snapshot built from the database, so a late subscriber is not
blank, then forwards every ``progress.event`` of :func:`dataspace.delivery.request_group` as
``{"type": "progress", ...event}``. Events carry only what the request page shows already.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import uuid
from typing import Any, ClassVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from dataspace import delivery
from dataspace.consumers import TypedJsonConsumer
from pods.agent.protocol import CloseCode

from . import progress

logger = logging.getLogger(__name__)

READ_SCOPE = "requests:read"  # the scope the provider API asks for to read a request
DEFAULT_AUTH_TIMEOUT = 5.0  # seconds to wait for a provider's hello (PROGRESS_AUTH_TIMEOUT)


Close = CloseCode


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    READY = "ready"
    CLOSED = "closed"


class Denied(Exception):
    def __init__(self, code: Close) -> None:
        super().__init__(code.name)
        self.code = code


class RequestProgressConsumer(TypedJsonConsumer):
    handlers: ClassVar[dict[tuple[Any, str], str]] = {
        (State.AWAIT_HELLO, "hello"): "on_hello",
        (State.READY, "ping"): "on_ping",
    }
    state: State
    request_id: str
    group: str | None

    async def connect(self) -> None:
        self.state = State.AWAIT_HELLO
        self.group = None
        self._timers: list[asyncio.TimerHandle] = []
        self.request_id = str(self.scope["url_route"]["kwargs"]["request_id"])
        await self.accept()  # accept first, so that the close code reaches the client
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            try:
                snapshot = await database_sync_to_async(snapshot_for_user)(self.request_id)
            except Denied as denied:
                await self._deny(denied.code)
                return
            await self._ready(snapshot)
            return
        timeout = float(getattr(settings, "PROGRESS_AUTH_TIMEOUT", DEFAULT_AUTH_TIMEOUT))
        self._later(timeout, self._auth_timeout)

    async def disconnect(self, code: int) -> None:
        self.state = State.CLOSED
        for timer in getattr(self, "_timers", []):
            timer.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def refuse(self) -> None:
        await self._deny(Close.PROTOCOL)

    # -- handlers --------------------------------------------------------------------------------

    async def on_hello(self, content: dict[str, Any]) -> None:
        token = content.get("token")
        try:
            if not isinstance(token, str) or not token or len(token) > 1024:
                raise Denied(Close.UNAUTHENTICATED)
            snapshot, expires_in = await database_sync_to_async(snapshot_for_token)(
                self.request_id, token
            )
        except Denied as denied:
            await self._deny(denied.code)
            return
        await self._ready(snapshot)
        self._later(expires_in, self._token_expired)  # a stream lives no longer than its token

    async def on_ping(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    # -- events from the channel layer -----------------------------------------------------------

    async def progress_event(self, message: dict[str, Any]) -> None:
        if self.state is State.READY and isinstance(message.get("event"), dict):
            await self.send_json({**message["event"], "type": "progress"})

    # -- helpers ---------------------------------------------------------------------------------

    async def _ready(self, snapshot: dict[str, Any]) -> None:
        for timer in self._timers:
            timer.cancel()  # the hello deadline
        self._timers = []
        self.group = delivery.request_group(self.request_id)
        # Group messages are dispatched only after this handler returns: the snapshot goes first.
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.state = State.READY
        await self.send_json({**snapshot, "type": "progress"})

    async def _deny(self, code: Close) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            await self.close(code=int(code))

    async def _auth_timeout(self) -> None:
        if self.state is State.AWAIT_HELLO:
            await self._deny(Close.UNAUTHENTICATED)

    async def _token_expired(self) -> None:
        if self.state is State.READY:
            await self._deny(Close.UNAUTHENTICATED)

    def _later(self, delay: float, callback: Any) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(max(0.0, delay), lambda: asyncio.ensure_future(callback()))
        )


# -- database side (sync; called through database_sync_to_async) ----------------------------------


snapshot_event = progress.request_event


def _parse_id(request_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(request_id)
    except ValueError:
        raise Denied(Close.NOT_FOUND) from None


def snapshot_for_user(request_id: str) -> dict[str, Any]:
    """A signed-in person may follow any request past its draft (its page is public to them)."""
    from .models import ModelRequest

    model_request = (
        ModelRequest.objects.exclude(status=ModelRequest.Status.DRAFT)
        .filter(pk=_parse_id(request_id))
        .first()
    )
    if model_request is None:
        raise Denied(Close.NOT_FOUND)
    return snapshot_event(model_request)


def snapshot_for_token(request_id: str, raw_token: str) -> tuple[dict[str, Any], float]:
    """Check a provider's bearer token as the provider API does; return the snapshot and the
    seconds the token has left. Raises :class:`Denied` with the close code otherwise.
    """
    from oauth2_provider.models import AccessToken

    from . import selectors
    from .models import ProviderClient

    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
    token = (
        AccessToken.objects.select_related("application").filter(token_checksum=checksum).first()
    )
    if token is None or token.application is None or token.is_expired():
        raise Denied(Close.UNAUTHENTICATED)
    client = (
        ProviderClient.objects.select_related("provider")
        .filter(application=token.application)
        .first()
    )
    if client is None:  # a pod's token, or some other application's: not a provider
        raise Denied(Close.UNAUTHENTICATED)
    if not token.allow_scopes([READ_SCOPE]):
        raise Denied(Close.FORBIDDEN)
    model_request = (
        selectors.model_requests_of(client.provider).filter(pk=_parse_id(request_id)).first()
    )
    if model_request is None:
        raise Denied(Close.NOT_FOUND)
    expires_in = (token.expires - timezone.now()).total_seconds()
    return snapshot_event(model_request), expires_in


__all__ = ["Close", "RequestProgressConsumer", "snapshot_event"]
