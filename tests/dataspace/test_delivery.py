"""Live delivery (dataspace.delivery): encoded once, in order, from a thread or without a loop."""

from __future__ import annotations

import json
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from dataspace import delivery


def _messages(count: int) -> list[dict[str, object]]:
    return [{"type": "round.stage", "round": i, "keys": [f"k{i}", {"n": i}]} for i in range(count)]


async def test_events_from_a_database_thread_reach_the_layer_in_order_encoded_once() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("pod.delivery-test", channel)
    sent = _messages(20)

    def commit_hooks() -> int:
        for message in sent:
            delivery.dispatch("pod.delivery-test", {"type": "pod.send", "message": message})
        return threading.get_ident()

    await database_sync_to_async(commit_hooks)()  # returns without waiting for delivery
    received = [await layer.receive(channel) for _ in sent]
    assert [r["type"] for r in received] == ["pod.send"] * len(sent)
    assert [json.loads(r["text"]) for r in received] == sent
    await layer.group_discard("pod.delivery-test", channel)


@pytest.mark.django_db
def test_without_an_event_loop_an_event_is_sent_before_dispatch_returns() -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("request.delivery-test", channel)
    event = {"type": "progress.event", "event": {"round": 1}}
    delivery.dispatch("request.delivery-test", event)
    assert async_to_sync(layer.receive)(channel) == event  # not a pod's: left as it is
    async_to_sync(layer.group_discard)("request.delivery-test", channel)


def test_a_message_that_is_not_json_is_not_delivered_and_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivery.dispatch("pod.x", {"type": "pod.send", "message": {"secret": object()}})
    assert "not delivered" in caplog.text
    assert "secret" not in caplog.text
