"""Group commit of a process's channel messages (pods.batching.Batcher)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pods.batching import Batcher

# Each call runs as the process runs database work (database_sync_to_async).
pytestmark = pytest.mark.django_db(transaction=True)


async def test_items_that_arrive_while_a_call_runs_go_in_one_next_call() -> None:
    """The first item goes at once, alone; the ones submitted meanwhile share the next call;
    every caller gets its own item's result."""
    release = threading.Event()
    calls: list[list[int]] = []

    def call(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(5)  # the first call is slow: the others queue up behind it
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(call)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0.05)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert calls == [[1], [2, 3, 4, 5, 6]]
    assert batcher.batches == 2


async def test_batches_hold_at_most_their_limit() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def call(items: list[int]) -> list[int]:
        calls.append(list(items))
        release.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(call, most=2)
    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3, 4]
    assert calls == [[0, 1], [2, 3], [4]]


async def test_a_failing_batch_is_tried_item_by_item_so_only_the_bad_item_fails() -> None:
    calls: list[list[int]] = []

    def call(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 3 in items:
            raise ValueError("item 3 is bad")
        return items

    release = threading.Event()

    def slow_then(items: list[int]) -> list[int]:
        if items == [0]:
            release.wait(5)
        return call(items)

    batcher: Batcher[int, int] = Batcher(slow_then)
    head = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.05)
    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.05)
    release.set()
    assert await head == 0
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    assert calls == [[0], [2, 3, 4], [2], [3], [4]]


async def test_a_caller_gone_meanwhile_does_not_break_the_batch() -> None:
    release = threading.Event()

    def call(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher: Batcher[int, int] = Batcher(call)
    gone = asyncio.ensure_future(batcher.submit(1))
    stays = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.05)
    gone.cancel()  # its connection closed while the call ran
    release.set()
    assert await stays == 2
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_in_a_burst_a_batch_waits_to_gather_the_items_that_follow() -> None:
    """Each call is quick, so without ``gather`` items coming a few milliseconds apart would
    each have a call of their own; with it, those that follow a call within ``burst`` share the
    next one."""
    calls: list[list[int]] = []

    def call(items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    batcher: Batcher[int, int] = Batcher(call, gather=0.3, burst=5.0)
    assert await batcher.submit(1) == 1  # after a quiet moment: at once, alone
    later = [asyncio.ensure_future(batcher.submit(2))]
    for item in (3, 4):
        await asyncio.sleep(0.03)
        later.append(asyncio.ensure_future(batcher.submit(item)))
    assert await asyncio.gather(*later) == [2, 3, 4]
    assert calls == [[1], [2, 3, 4]]
    assert (batcher.batches, batcher.items) == (2, 4)


async def test_after_a_quiet_moment_an_item_goes_at_once() -> None:
    """``gather`` costs an item nothing when no batch ended within ``burst``."""
    batcher: Batcher[int, int] = Batcher(lambda items: items, gather=5.0, burst=0.05)
    assert await asyncio.wait_for(batcher.submit(1), 2) == 1
    await asyncio.sleep(0.1)  # longer than the burst: quiet again
    assert await asyncio.wait_for(batcher.submit(2), 2) == 2
    assert batcher.batches == 2
