"""Group commit for a process's connections: many pods' messages in one database call.

A WebSocket message's database work runs on the process's one thread for database calls
(``database_sync_to_async`` is thread-sensitive), one message after another, each in its own
transaction. A :class:`Batcher` instead queues what its connections hand in and gives one call
the whole queue at a time. The first item goes at once (nothing waits when the process is
idle); items that arrive while a call runs go in the next one, so batches grow with the load —
the pattern of a database's group commit.

Under a steady stream — a cohort answering a stage, each pod a few milliseconds after the last —
each call finishes before the next item comes, and batches stay small: a call per item or two,
each paying a transaction's fixed cost. With ``gather``, a batch that starts soon after the last
one ended (within ``burst``) first waits ``gather`` seconds for more items, as a database's
``commit_delay``; an item that comes after a quiet moment still goes at once.

A process killed with items queued loses them together with the connections they came on: the
pods reconnect, are asked the open stage again (``training.rounds.messages.stage_messages_for``;
the clock's resend, ``training.rounds.resending``) and answer it with their first answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Hands items to ``call`` (a synchronous function taking a list and returning one result
    per item, in order) in batches of at most ``most``; :meth:`submit` awaits an item's result.

    If a batch's call raises, each of its items is tried alone, so only the item at fault
    raises (and only its connection sees the error)."""

    def __init__(
        self,
        call: Callable[[list[Item]], Sequence[Result]],
        most: int = 500,
        *,
        gather: float = 0.0,
        burst: float = 0.05,
    ) -> None:
        self.call = call
        self.most = most
        self.gather = gather  # seconds a batch in a burst waits for more items
        self.burst = burst  # a batch starting this soon after the last one is in a burst
        self.batches = 0  # calls made (tests and benchmarks read it)
        self.items = 0  # items handed to calls (tests and benchmarks read it)
        self._ended = float("-inf")  # when the last call ended (the loop's clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): nothing queued on the old one
            self._loop, self._queue, self._task = loop, [], None
            self._ended = float("-inf")
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if (
                self.gather > 0
                and len(self._queue) < self.most
                and loop.time() - self._ended < self.burst
            ):
                await asyncio.sleep(self.gather)
            batch, self._queue = self._queue[: self.most], self._queue[self.most :]
            self.items += len(batch)
            await self._run(batch)
            self._ended = loop.time()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        self.batches += 1
        try:
            results = list(await database_sync_to_async(self.call)([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as exc:
            if len(batch) > 1:
                logger.warning("a batch of %d failed; each item alone", len(batch))
                for one in batch:
                    await self._run([one])
                return
            _, future = batch[0]
            if not future.done():
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its connection may have closed meanwhile
                future.set_result(result)
