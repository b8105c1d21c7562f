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
"""

from __future__ import annotations

import time

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
