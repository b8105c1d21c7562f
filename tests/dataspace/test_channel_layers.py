"""The embedded default's in-memory channel layer: expiry still applies, but not as a scan of
every channel and membership on each receive and group send (quadratic with N pods)."""

from __future__ import annotations

import asyncio
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
