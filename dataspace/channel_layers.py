"""The channel layers: Redis (production), in memory (the embedded default).

The Redis channel layer, with a blocking receive shorter than the Redis socket timeout.

channels-redis waits for a consumer's next message with ``BZPOPMIN`` blocking for
``brpop_timeout`` (5 s); redis-py's default ``socket_timeout`` is also 5 s. The two raced: an
idle receive often hit the socket timeout first, raised ``redis.exceptions.TimeoutError``
("Exception in ASGI application") and closed the WebSocket, so idle pods were dropped every
5–7 s (issue 12). A longer socket timeout instead leaves receives that a shutting-down event
loop cancels hanging for it; a shorter blocking receive keeps both: reads always end before the
socket timeout, which still catches a Redis that stopped answering.

A receive cancelled as its ``BZPOPMIN`` is under way (a consumer closing: channels cancels its
pending receive) could lose the cancellation in redis-py, which then returned "no message";
channels-redis's receive asks again, and with the short blocking receive it never hit the
socket timeout either: the receive never ended, and a web process told to stop waited for it
until it was killed (15 s in the chaos tests, about 1 cancelled receive in 50). The layer now
honours a cancellation still pending when ``BZPOPMIN`` returns (a message it popped stays in
channels-redis's backup queue, as on any cancellation).

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

Both layers send many group messages at once (``group_send_many``): a stage's opening sends one
message to each pod of the cohort, each to the pod's own group. channels-redis sends each group
message as several Redis commands (expire the group, read its members, then a script that
checks capacity, adds and expires), and the receiving process pops it with one more: at 100
pods about 90 Redis commands per pod per round, and redis-py's writes a fifth of a web
process's CPU. The Redis layer instead reads every group's members in one pipeline and sends
one Redis message per receiving process (its ``specific.<prefix>!`` key), carrying each of its
channels' messages in order; that process's receive puts each into its channel's buffer, as
channels-redis does for the channels of a group send.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

logger = logging.getLogger(__name__)

# Seconds BZPOPMIN blocks per receive: well under redis-py's 5 s socket timeout.
BLOCKING_RECEIVE_SECONDS = 2
# The key of a batch message: [[channel names, message], ...] for one receiving process.
BATCH = "__dataspace_batch__"
# Messages in one batch at most (a stage's messages are a few KiB each).
BATCH_MOST = 200


class RedisChannelLayer(_RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = BLOCKING_RECEIVE_SECONDS

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> Any:
        """channels-redis's, raising a cancellation the Redis client swallowed (see above)."""
        member = await super()._brpop_with_clean(index, channel, timeout)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return member

    async def group_send_many(self, sends: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Each (group, message) as ``group_send`` would deliver it, in order, in a few Redis
        round trips: the groups' members in one pipeline per Redis host, then one message per
        receiving process (at most ``BATCH_MOST`` channels' messages each). A process's key
        over capacity loses that batch, as ``group_send`` loses a message (logged)."""
        if not sends:
            return
        members = await self._members([group for group, _ in sends])
        batches: dict[str, list[list[Any]]] = collections.defaultdict(list)
        for (_, message), names in zip(sends, members, strict=True):
            by_process: dict[str, list[str]] = collections.defaultdict(list)
            for name in names:
                if "!" in name:
                    by_process[self.non_local_name(name)].append(name)
                else:  # a general channel (none of ours): as channels-redis sends it
                    await self.send(name, message)
            for process, channels in by_process.items():
                batches[process].append([channels, message])
        for process, items in batches.items():
            for start in range(0, len(items), BATCH_MOST):
                try:
                    await self._send_batch(process, items[start : start + BATCH_MOST])
                except Exception:  # one lost batch never stops the others
                    logger.warning("a batch for %s not delivered", process, exc_info=True)

    async def _members(self, groups: Sequence[str]) -> list[list[str]]:
        now = int(time.time())
        found: list[list[str]] = [[] for _ in groups]
        by_host: dict[int, list[int]] = collections.defaultdict(list)
        for position, group in enumerate(groups):
            by_host[self.consistent_hash(group)].append(position)
        for index, positions in by_host.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for position in positions:
                key = self._group_key(groups[position])
                pipe.zremrangebyscore(key, min=0, max=now - self.group_expiry)
                pipe.zrange(key, 0, -1)
            results = await pipe.execute()
            for position, names in zip(positions, results[1::2], strict=True):
                found[position] = [name.decode("utf8") for name in names]
        return found

    async def _send_batch(self, process: str, items: list[list[Any]]) -> None:
        key = self.prefix + process
        connection = self.connection(self.consistent_hash(process))
        pipe = connection.pipeline(transaction=False)
        pipe.zremrangebyscore(key, min=0, max=int(time.time()) - int(self.expiry))
        pipe.zcount(key, "-inf", "+inf")
        _, queued = await pipe.execute()
        if queued >= self.get_capacity(process):
            logger.info("a batch of %d messages over capacity for %s", len(items), process)
            return
        pipe = connection.pipeline(transaction=False)
        pipe.zadd(key, {self.serialize({"type": "layer.batch", BATCH: items}): time.time()})
        pipe.expire(key, int(self.expiry))
        await pipe.execute()

    async def receive_single(self, channel: str) -> tuple[Any, dict[str, Any]]:
        """channels-redis's, unpacking a batch: each of its messages but the last goes to its
        channels' buffers here, in order; the last is returned, as a group message is, for
        ``receive`` to buffer after them."""
        name, message = await super().receive_single(channel)
        batch = message.get(BATCH) if isinstance(message, dict) else None
        if not isinstance(batch, list) or not batch:
            return name, message
        *earlier, (channels, last) = batch
        for names, each in earlier:
            for one in names:
                self.receive_buffer[one].put_nowait(each)
        return channels, last


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]
    clean_every = 1.0  # seconds between two scans for expired messages and memberships
    _cleaned_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_every:
            return
        self._cleaned_at = now
        super()._clean_expired()

    async def group_send_many(self, sends: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Each (group, message), in order (all in this process: nothing to batch)."""
        for group, message in sends:
            await self.group_send(group, message)

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
