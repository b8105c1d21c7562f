"""The one way out for live messages: channel-layer group sends, after the transaction commits.

Every push to a pod's connection (a round stage, a close) and every progress event goes through
:func:`send_on_commit`, so nothing reaches a pod or a watcher about a change that was rolled
back (the habit of Zulip's ``send_event_on_commit``). Delivery is best effort: the state lives
in the database, and a pod that missed a message is asked again (docs/architecture.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from asgiref.sync import async_to_sync
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
    """Send each (group, event) now, in order, in one call into the layer's event loop (a
    stage's messages to a whole cohort: one hop, not one per pod). Tests replace this to capture
    what leaves. A missing or failing layer never breaks the caller; an event's ``type`` is
    logged, never its content."""
    layer = get_channel_layer()
    if layer is None or not sends:
        return
    try:
        async_to_sync(_send_all)(layer, sends)
    except Exception:
        logger.warning("%d events not delivered", len(sends), exc_info=True)


async def _send_all(layer: Any, sends: Sequence[tuple[str, Event]]) -> None:
    for group, event in sends:
        try:
            await layer.group_send(group, event)
        except Exception:  # one lost event (a full channel...) never stops the others
            logger.warning("%s to %s not delivered", event.get("type"), group, exc_info=True)


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
