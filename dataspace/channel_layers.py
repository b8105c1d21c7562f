"""The channel layers: Redis (production), in memory (the embedded default).

The Redis channel layer, with a blocking receive shorter than the Redis socket timeout.

channels-redis waits for a consumer's next message with ``BZPOPMIN`` blocking for
``brpop_timeout`` (5 s); redis-py's default ``socket_timeout`` is also 5 s. The two raced: an
idle receive often hit the socket timeout first, raised ``redis.exceptions.TimeoutError``
("Exception in ASGI application") and closed the WebSocket, so idle pods were dropped every
5–7 s (issue 12). A longer socket timeout instead leaves receives that a shutting-down event
loop cancels hanging for it; a shorter blocking receive keeps both: reads always end before the
socket timeout, which still catches a Redis that stopped answering.

The in-memory layer, sweeping expired messages and memberships at most once a second:
Channels' own walks every channel and group on each receive and group send, so a round's
messages to n connected pods cost O(n²) (4 % of the embedded server's time at 100 pods).
Messages expire after a minute and memberships after a day; a message may now be delivered up
to a second after its expiry — a stage message is asked again anyway.
"""

from __future__ import annotations

from time import monotonic

from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

# Seconds BZPOPMIN blocks per receive: well under redis-py's 5 s socket timeout.
BLOCKING_RECEIVE_SECONDS = 2


class RedisChannelLayer(_RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = BLOCKING_RECEIVE_SECONDS


# Seconds between two sweeps of the in-memory layer's expired messages and memberships.
SWEEP_SECONDS = 1.0


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]
    _swept_at = float("-inf")

    def _clean_expired(self) -> None:
        now = monotonic()
        if now - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = now
        super()._clean_expired()
