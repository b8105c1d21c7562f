"""The Redis channel layer, with a blocking receive shorter than the Redis socket timeout.

channels-redis waits for a consumer's next message with ``BZPOPMIN`` blocking for
``brpop_timeout`` (5 s); redis-py's default ``socket_timeout`` is also 5 s. The two raced: an
idle receive often hit the socket timeout first, raised ``redis.exceptions.TimeoutError``
("Exception in ASGI application") and closed the WebSocket, so idle pods were dropped every
5–7 s (issue 12). A longer socket timeout instead leaves receives that a shutting-down event
loop cancels hanging for it; a shorter blocking receive keeps both: reads always end before the
socket timeout, which still catches a Redis that stopped answering.
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

# Seconds BZPOPMIN blocks per receive: well under redis-py's 5 s socket timeout.
BLOCKING_RECEIVE_SECONDS = 2


class RedisChannelLayer(_RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = BLOCKING_RECEIVE_SECONDS
