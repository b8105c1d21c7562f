"""The one way out for live messages: channel-layer group sends, after the transaction commits.

Every push to a pod's connection (a round stage, a close) and every progress event goes through
:func:`send_on_commit`, so nothing reaches a pod or a watcher about a change that was rolled
back (the habit of Zulip's ``send_event_on_commit``). Delivery is best effort: the state lives
in the database, and a pod that missed a message is asked again (docs/architecture.md).

Sent from a thread that serves the process's event loop (a request's or a database call's: the
on-commit hooks run there), events are not sent one ``async_to_sync`` call at a time — a hop to
the loop and back, the thread waiting, per event: a round's commit sends one per pod. They go to
the loop's :class:`Outbox` instead, in order, and the loop sends them; the thread goes on at
once. A pod's message is encoded to JSON here, once (``text``), rather than copied by the channel
layer and encoded by the connection's consumer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

Event = dict[str, Any]


def pod_group(pod_id: uuid.UUID | str) -> str:
    """The channel-layer group a pod's live connection joins."""
    return f"pod.{pod_id}"


def request_group(request_id: uuid.UUID | str) -> str:
    """The group watchers of a model request's progress join (portal page, provider watch)."""
    return f"request.{request_id}"


def dispatch(group: str, event: Event) -> None:
    """Send now (:func:`dispatch_all` of one event)."""
    dispatch_all([(group, event)])


def dispatch_all(sends: Sequence[tuple[str, Event]]) -> None:
    """Send each (group, event) now, in order: queued for the event loop this thread serves
    (:class:`Outbox`), or else in one ``async_to_sync`` call (a stage's messages to a whole
    cohort: one hop, not one per pod). Tests replace this to capture what leaves. A missing or
    failing layer never breaks the caller; an event's ``type`` is logged, never its content."""
    layer = get_channel_layer()
    if layer is None or not sends:
        return
    try:
        wired = [(group, wire_event(event)) for group, event in sends]
        loop = _serving_loop()
        if loop is not None:
            Outbox.of(loop).put(layer, wired)
        else:  # no event loop in this process to hand them to (a Celery worker, a command)
            async_to_sync(_send_all)(layer, wired)
    except Exception:
        logger.warning("%d events not delivered", len(sends), exc_info=True)


async def _send_all(layer: Any, sends: Sequence[tuple[str, Event]]) -> None:
    """Each (group, event), in order: all at once where the layer can (our layers'
    ``group_send_many``: one Redis message per receiving process), else one by one. Not sent
    again one by one when sending at once fails: part may have gone (the clock asks again)."""
    many = getattr(layer, "group_send_many", None)
    if many is not None:
        try:
            await many(sends)
        except Exception:
            logger.warning("%d events not delivered", len(sends), exc_info=True)
        return
    for group, event in sends:
        try:
            await layer.group_send(group, event)
        except Exception:  # one lost event (a full channel...) never stops the others
            logger.warning("%s to %s not delivered", event.get("type"), group, exc_info=True)


def wire_event(event: Event) -> Event:
    """A pod's message as it goes on the layer: its JSON text, encoded once. A message handing
    the pod a task also names (``weights``) the SHA-256 of the weights the task trains from:
    the pod's connection sends them first as a binary frame, if the pod takes them so
    (``pods.consumers``), rather than the pod downloading them over HTTP."""
    if event.get("type") == "pod.send" and "message" in event:
        message = event["message"]
        wired: Event = {"type": "pod.send", "text": json.dumps(message)}
        weights = task_weights(message)
        if weights is not None:
            wired["weights"] = weights
        return wired
    return event


def task_weights(message: Event) -> str | None:
    """The SHA-256 of the weights a pod's message hands it a task for (None: no task)."""
    task = message.get("task")
    if isinstance(task, dict) and isinstance(task.get("weights_sha256"), str):
        return str(task["weights_sha256"])
    return None


def _serving_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop this thread serves (it runs a ``sync_to_async`` call), or this
    thread's own running loop; None when there is neither."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    local = SyncToAsync.threadlocal  # set by asgiref in the threads its calls run on
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


class Outbox:
    """Events for the channel layer, handed in by any thread, sent by one task on the loop in
    the order they came. The first event of a batch wakes the loop; the rest only queue; the
    task sends what has queued meanwhile together (:func:`_send_all`)."""

    most = 1000  # events sent together at most

    _boxes: dict[asyncio.AbstractEventLoop, Outbox] = {}
    _boxes_lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: collections.deque[tuple[Any, str, Event]] = collections.deque()
        self.lock = threading.Lock()
        self.draining = False
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Outbox:
        with cls._boxes_lock:
            box = cls._boxes.get(loop)
            if box is None:
                for old in [old for old in cls._boxes if old.is_closed()]:
                    del cls._boxes[old]
                box = cls._boxes[loop] = cls(loop)
            return box

    def put(self, layer: Any, sends: Sequence[tuple[str, Event]]) -> None:
        with self.lock:
            self.events.extend((layer, group, event) for group, event in sends)
            if self.draining:
                return
            self.draining = True
        try:
            self.loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop closed meanwhile
            with self.lock:
                self.events.clear()
                self.draining = False
            raise

    def _start(self) -> None:
        self.task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self.lock:
                if not self.events:
                    self.draining = False
                    return
                layer = self.events[0][0]
                sends: list[tuple[str, Event]] = []
                while self.events and self.events[0][0] is layer and len(sends) < self.most:
                    _, group, event = self.events.popleft()
                    sends.append((group, event))
            await _send_all(layer, sends)


def send_on_commit(group: str, event: Event) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one)."""
    send_all_on_commit([(group, event)])


def send_all_on_commit(sends: Sequence[tuple[str, Event]]) -> None:
    """Send every (group, event) once the current transaction commits, in one batch."""
    if sends:
        transaction.on_commit(lambda: dispatch_all(sends))


def to_pod(pod_id: uuid.UUID | str, message: Event) -> None:
    """A protocol message for the pod's live connection (``pod.send`` in its consumer)."""
    to_pods([(pod_id, message)])


def to_pods(messages: Iterable[tuple[uuid.UUID | str, Event]]) -> None:
    """Protocol messages for many pods' connections (a stage asked of a cohort), sent in one
    batch after commit."""
    send_all_on_commit(
        [(pod_group(pod_id), {"type": "pod.send", "message": m}) for pod_id, m in messages]
    )


def close_pod(pod_id: uuid.UUID | str, code: int) -> None:
    """Close the pod's live connection with ``code`` (``pod.close`` in its consumer)."""
    send_on_commit(pod_group(pod_id), {"type": "pod.close", "code": int(code)})


def to_watchers(request_id: uuid.UUID | str, event: Event) -> None:
    """A progress event for a request's watchers (``progress.event`` in their consumer)."""
    send_on_commit(request_group(request_id), {"type": "progress.event", "event": event})
