"""What the service's WebSocket consumers share: typed JSON messages dispatched by state."""

from __future__ import annotations

from typing import Any, ClassVar

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from pods.agent.protocol import CloseCode, MessageType
from training.modelspec import safejson


class TypedJsonConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Messages are JSON objects with a ``type``; ``handlers`` maps (connection state, type) to
    the name of the method that takes it. Anything else — not JSON, not an object, a type not
    expected in this state — gets an ``unexpected_message`` error where it is an object, and the
    connection is closed through :meth:`refuse`."""

    handlers: ClassVar[dict[tuple[Any, str], str]] = {}
    state: Any

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its ``close_old_connections`` in a worker thread before
        every message: a thread hop per heartbeat, a tenth of an idle server's CPU at 5,000
        pods. These consumers touch the database only through ``database_sync_to_async``,
        which closes stale connections itself, in the thread that uses them, around each call
        (Channels still does it once more when a connection closes)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.refuse()
            return
        name = self.handlers.get((self.state, content["type"]))
        if name is None:
            await self.send_json({"type": MessageType.ERROR, "code": "unexpected_message"})
            await self.refuse()
            return
        await getattr(self, name)(content)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return safejson.loads(text_data)  # depth- and NUL-checked, as the API
        except ValueError:
            return None  # refused by receive_json like any other malformed message

    async def refuse(self) -> None:
        await self.close(code=CloseCode.PROTOCOL)
