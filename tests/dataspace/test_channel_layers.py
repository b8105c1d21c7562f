"""The embedded default's in-memory channel layer: expiry still applies, but not as a scan of
every channel and membership on each receive and group send (quadratic with N pods)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from dataspace.channel_layers import InMemoryChannelLayer


async def test_messages_and_memberships_still_expire() -> None:
    layer = InMemoryChannelLayer(expiry=0.05, group_expiry=1)
    layer.clean_every = 0.0
    await layer.group_add("pod.1", "specific.inmemory!a")
    await layer.send("specific.inmemory!b", {"type": "stale"})
    await asyncio.sleep(0.1)
    layer.groups["pod.1"]["specific.inmemory!a"] -= 5  # joined long before the group expiry

    await layer.send("specific.inmemory!c", {"type": "fresh"})
    assert await layer.receive("specific.inmemory!c") == {"type": "fresh"}  # cleans first

    assert "specific.inmemory!b" not in layer.channels
    assert "specific.inmemory!a" not in layer.groups.get("pod.1", {})


async def test_receives_and_group_sends_scan_at_most_once_a_second(monkeypatch: Any) -> None:
    from channels.layers import InMemoryChannelLayer as ChannelsLayer

    scans = []
    monkeypatch.setattr(ChannelsLayer, "_clean_expired", lambda self: scans.append(1))
    layer = InMemoryChannelLayer()
    for i in range(50):
        await layer.group_add(f"pod.{i}", f"specific.inmemory!{i}")
        await layer.group_send(f"pod.{i}", {"type": "pod.send", "message": {}})
    for i in range(50):
        assert await layer.receive(f"specific.inmemory!{i}") == {
            "type": "pod.send",
            "message": {},
        }
    assert scans == [1]


async def test_a_queued_message_is_a_copy_and_any_message_still_goes() -> None:
    """What the receiver gets is the message as sent, whatever the sender changes afterwards
    (channels' copy, made with msgpack now); one msgpack cannot carry is copied as before."""
    layer = InMemoryChannelLayer()
    inner = {"adverts": {"7": {"key_log": [b"\x00" * 32]}}, "survivors": [1, 2, 3]}
    message: dict[str, Any] = {"type": "pod.send", "message": inner, 5: (1, 2)}
    await layer.send("specific.inmemory!a", message)
    inner["survivors"].append(4)
    inner["adverts"]["7"]["key_log"].clear()
    received = await layer.receive("specific.inmemory!a")
    assert received["message"] == {
        "adverts": {"7": {"key_log": [b"\x00" * 32]}},
        "survivors": [1, 2, 3],
    }
    assert received[5] == [1, 2]  # as the Redis layer gives it back

    odd = {"type": "pod.send", "at": object()}
    await layer.send("specific.inmemory!b", odd)
    got = await layer.receive("specific.inmemory!b")
    assert got["at"] is not odd["at"] and got["type"] == "pod.send"


@pytest.mark.parametrize("setting", ["", "redis://redis.example:6379/0"])
def test_the_settings_choose_the_layers_of_this_module(setting: str) -> None:
    from tests.dataspace.test_settings import settings_value

    result = settings_value(
        "settings.CHANNEL_LAYERS['default']['BACKEND']",
        **({"REDIS_URL": setting} if setting else {}),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].strip('"').startswith("dataspace.channel_layers.")


async def test_in_memory_group_send_many_delivers_each_in_order() -> None:
    layer = InMemoryChannelLayer()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g1", one)
    await layer.group_add("g2", two)
    await layer.group_send_many(
        [(group, {"type": "m", "n": n}) for n, group in enumerate(("g1", "g2", "g1"), 1)]
    )
    assert [(await layer.receive(one))["n"] for _ in range(2)] == [1, 3]
    assert (await layer.receive(two))["n"] == 2


def _redis_url() -> str:
    import os

    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs Redis")
    return url


async def test_redis_group_send_many_sends_one_message_per_receiving_process(
    monkeypatch: Any,
) -> None:
    """Three layers stand for three processes on one Redis. Messages to many groups reach
    each process as one Redis message per BATCH_MOST (here 3), and each channel gets exactly
    its own messages, in order — a group with two channels of one process, both."""
    import uuid

    from dataspace import channel_layers
    from dataspace.channel_layers import RedisChannelLayer

    monkeypatch.setattr(channel_layers, "BATCH_MOST", 3)
    url = _redis_url()
    prefix = f"test-batch-{uuid.uuid4().hex[:8]}"
    sender, b, c = (RedisChannelLayer(hosts=[url], prefix=prefix) for _ in range(3))
    try:
        b1, b2, c1 = await b.new_channel(), await b.new_channel(), await c.new_channel()
        await sender.group_add("pod.1", b1)
        await sender.group_add("pod.2", b2)
        await sender.group_add("pod.3", c1)
        await sender.group_add("both", b1)
        await sender.group_add("both", b2)
        sends: list[tuple[str, dict[str, Any]]] = [
            (group, {"type": "pod.send", "text": f"{group}/{n}"})
            for n in range(3)
            for group in ("pod.1", "pod.2", "pod.3")
        ]
        sends.append(("both", {"type": "pod.send", "text": "both"}))
        sends.append(("nobody", {"type": "pod.send", "text": "lost"}))
        await sender.group_send_many(sends)

        connection = sender.connection(0)
        # b: 7 messages (3 + 3 + 1 for both) in batches of 3; c: 3 in one
        assert await connection.zcard(prefix + b.non_local_name(b1)) == 3
        assert await connection.zcard(prefix + c.non_local_name(c1)) == 1

        async def texts(layer: RedisChannelLayer, channel: str, count: int) -> list[str]:
            return [(await layer.receive(channel))["text"] for _ in range(count)]

        assert await texts(b, b1, 4) == ["pod.1/0", "pod.1/1", "pod.1/2", "both"]
        assert await texts(b, b2, 4) == ["pod.2/0", "pod.2/1", "pod.2/2", "both"]
        assert await texts(c, c1, 3) == ["pod.3/0", "pod.3/1", "pod.3/2"]
        assert all(not buffer.qsize() for buffer in b.receive_buffer.values())
    finally:
        for layer in (sender, b, c):
            await layer.flush()
            await layer.close_pools()


async def test_redis_a_batch_over_capacity_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import uuid

    from dataspace.channel_layers import RedisChannelLayer

    url = _redis_url()
    prefix = f"test-full-{uuid.uuid4().hex[:8]}"
    sender = RedisChannelLayer(hosts=[url], prefix=prefix, capacity=1)
    receiver = RedisChannelLayer(hosts=[url], prefix=prefix, capacity=1)
    try:
        channel = await receiver.new_channel()
        await sender.group_add("pod.1", channel)
        await sender.group_send_many([("pod.1", {"type": "pod.send", "text": "first"})])
        with caplog.at_level("INFO", logger="dataspace.channel_layers"):
            await sender.group_send_many([("pod.1", {"type": "pod.send", "text": "second"})])
        assert "over capacity" in caplog.text
        assert (await receiver.receive(channel))["text"] == "first"
        assert await sender.connection(0).zcard(prefix + receiver.non_local_name(channel)) == 0
    finally:
        for layer in (sender, receiver):
            await layer.flush()
            await layer.close_pools()


async def test_a_cancelled_receive_ends_when_the_redis_client_loses_the_cancellation(
    monkeypatch: Any,
) -> None:
    """redis-py could swallow a cancellation that came while ``BZPOPMIN`` blocked and return
    "no message": channels-redis then blocked again, for ever (a closing consumer's receive, so
    a stopping web process waited until it was killed). Here the blocking pop does exactly that;
    the receive still ends, cancelled, after that one pop."""
    from channels_redis.core import RedisChannelLayer as Upstream

    from dataspace.channel_layers import RedisChannelLayer

    pops: list[str] = []
    checked = False

    async def swallowing_pop(self: Any, index: int, channel: str, timeout: float) -> None:
        if checked:  # the test has its answer: end a receive that would block for ever
            raise RuntimeError("stopped by the test")
        pops.append(channel)
        with contextlib.suppress(asyncio.CancelledError):  # lost, as redis-py lost it
            await asyncio.sleep(timeout)
        return None

    monkeypatch.setattr(Upstream, "_brpop_with_clean", swallowing_pop)
    layer = RedisChannelLayer(hosts=[_redis_url()])
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.05)
    receiving.cancel()
    # Not wait_for: on its timeout it would wait for the cancelled receive to end.
    await asyncio.wait([receiving], timeout=3 * layer.brpop_timeout)
    ended = receiving.done()
    checked = True
    await asyncio.wait([receiving], timeout=3 * layer.brpop_timeout)
    assert ended and receiving.cancelled()
    assert len(pops) == 1


async def test_receives_cancelled_at_any_moment_on_real_redis_all_end() -> None:
    """Cancelled at random moments of a real blocking receive (before, during and after the
    Redis commands), every receive ends within one blocking period."""
    import random

    from dataspace.channel_layers import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[_redis_url()])
    hung = []
    for _ in range(60):
        receiving = asyncio.ensure_future(layer.receive(await layer.new_channel()))
        await asyncio.sleep(random.random() * 0.04)
        receiving.cancel()
        done, _ = await asyncio.wait([receiving], timeout=layer.brpop_timeout + 2)
        if not done:
            hung.append(receiving)
    if hung:  # end them (their next pop fails), or the event loop's close waits for ever

        async def failing_pop(*_: Any, **__: Any) -> None:
            raise RuntimeError("stopped by the test")

        layer._brpop_with_clean = failing_pop  # type: ignore[method-assign]
        await asyncio.wait(hung, timeout=3 * layer.brpop_timeout)
    assert not hung
