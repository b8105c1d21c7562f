"""The one way out for live messages: channel-layer group sends, after the transaction commits.

Every push to a pod's connection (a round stage, a close) and every progress event goes through
:func:`send_on_commit`, so nothing reaches a pod or a watcher about a change that was rolled
back (the habit of Zulip's ``send_event_on_commit``). Delivery is best effort: the state lives
in the database, and a pod that missed a message is asked again (docs/architecture.md).
"""

from __future__ import annotations

import logging
import uuid
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
    """Send now (tests replace this to capture what leaves). A missing or failing layer never
    breaks the caller; the event's ``type`` is logged, never its content."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception:
        logger.warning("%s to %s not delivered", event.get("type"), group, exc_info=True)


def send_on_commit(group: str, event: Event) -> None:
    """Send ``event`` to ``group`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: dispatch(group, event))


def to_pod(pod_id: uuid.UUID | str, message: Event) -> None:
    """A protocol message for the pod's live connection (``pod.send`` in its consumer)."""
    send_on_commit(pod_group(pod_id), {"type": "pod.send", "message": message})


def close_pod(pod_id: uuid.UUID | str, code: int) -> None:
    """Close the pod's live connection with ``code`` (``pod.close`` in its consumer)."""
    send_on_commit(pod_group(pod_id), {"type": "pod.close", "code": int(code)})


def to_watchers(request_id: uuid.UUID | str, event: Event) -> None:
    """A progress event for a request's watchers (``progress.event`` in their consumer)."""
    send_on_commit(request_group(request_id), {"type": "progress.event", "event": event})
