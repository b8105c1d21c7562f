"""The channel layers: Redis (production), in memory (the embedded default).

The Redis channel layer, with a blocking receive shorter than the Redis socket timeout.

channels-redis waits for a consumer's next message with ``BZPOPMIN`` blocking for
``brpop_timeout`` (5 s); redis-py's default ``socket_timeout`` is also 5 s. The two raced: an
idle receive often hit the socket timeout first, raised ``redis.exceptions.TimeoutError``
("Exception in ASGI application") and closed the WebSocket, so idle pods were dropped every
5–7 s (issue 12). A longer socket timeout instead leaves receives that a shutting-down event
loop cancels hanging for it; a shorter blocking receive keeps both: reads always end before the
socket timeout, which still catches a Redis that stopped answering.

The in-memory layer, cleaning expired messages and group memberships at most once a second.
Channels' own scans every channel and every group membership on each ``receive`` and
``group_send``: each connection's consumer starts a receive, and each message to a pod's group
is a group send, so with N pods connected every connect and every stage message cost O(N) —
connecting 10,000 idle pods took minutes of the server's CPU, quadratic in N. Expiry (60 s for
messages, a day for memberships) is then applied up to a second late.

Each message it queues is a copy, as the Redis layer's is: made with msgpack, as that layer
serialises them (channels' own ``deepcopy`` cost a closing stage more than building its
messages: a millisecond for a share_keys message with its neighbours' key-log proofs). A
message msgpack cannot carry is deep-copied as before.
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

# Seconds BZPOPMIN blocks per receive: well under redis-py's 5 s socket timeout.
BLOCKING_RECEIVE_SECONDS = 2


class RedisChannelLayer(_RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = BLOCKING_RECEIVE_SECONDS


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]
    clean_every = 1.0  # seconds between two scans for expired messages and memberships
    _cleaned_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_every:
            return
        self._cleaned_at = now
        super()._clean_expired()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """channels' ``send``, the message copied through msgpack (see the module's text)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, _copy(message)))
        except asyncio.QueueFull as full:
            raise ChannelFull(channel) from full


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    try:
        copied = msgpack.unpackb(
            msgpack.packb(message, use_bin_type=True), raw=False, strict_map_key=False
        )
    except (TypeError, ValueError, OverflowError):
        return deepcopy(message)
    return copied if isinstance(copied, dict) else deepcopy(message)
