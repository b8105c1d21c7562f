"""Who is online: each pod's live control channel, kept in the database so every web process
and worker sees the same set, with heartbeats that expire a silent connection."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone
from oauth2_provider.models import AccessToken

from consent.models import DataSubject

from .models import Pod
from .services import pod_of_token


def pod_for_bearer(raw_token: str) -> Pod | None:
    """The active pod a bearer token belongs to, if the token is valid with scope ``pod``."""
    found = pod_and_expiry_for_bearer(raw_token)
    return found[0] if found is not None else None


def pod_and_expiry_for_bearer(raw_token: str) -> tuple[Pod, datetime] | None:
    """:func:`pod_for_bearer`, with when the token expires."""
    checksum = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
    token = (
        AccessToken.objects.select_related("application").filter(token_checksum=checksum).first()
    )
    if token is None or not token.is_valid(["pod"]):
        return None
    pod = pod_of_token(token)
    return (pod, token.expires) if pod is not None else None


def new_nonce() -> bytes:
    return os.urandom(32)


def mark_online(*, pod_id: uuid.UUID | str, channel_name: str) -> str:
    """Record the pod's live channel; return the channel it replaces ("" if none)."""
    now = timezone.now()
    previous = Pod.objects.filter(pk=pod_id).values_list("channel_name", flat=True).first() or ""
    Pod.objects.filter(pk=pod_id).update(
        channel_name=channel_name, connected_at=now, last_seen_at=now
    )
    return previous if previous != channel_name else ""


def mark_seen(*, pod_id: uuid.UUID | str, channel_name: str) -> None:
    Pod.objects.filter(pk=pod_id, channel_name=channel_name).update(last_seen_at=timezone.now())


# Pods per UPDATE of a batch of heartbeats (two query parameters each).
SEEN_BATCH = 400


def mark_seen_many(seen: Mapping[str, str]) -> int:
    """Heartbeats of many pods, pod id → the channel that beat, in one UPDATE per batch (a row
    whose live channel is another, the pod having reconnected elsewhere since, is left alone).

    Matched by channel name alone, not pod by pod: a channel name belongs to one connection,
    which proves one pod and records its name on that pod's row only (``mark_online``), so the
    row holding a channel of the batch is that channel's pod. One IN list of names (indexed)
    costs the ORM a third of what ids and names did (each id is parsed as a UUID), and a
    fraction of a disjunction of one Q per pod (at 5,000 idle pods the disjunctions were a
    quarter of the server's CPU)."""
    now = timezone.now()
    items = list(seen.items())
    updated = 0
    for start in range(0, len(items), SEEN_BATCH):
        batch = items[start : start + SEEN_BATCH]
        names = [channel_name for _, channel_name in batch if channel_name]
        updated += Pod.objects.filter(channel_name__in=names).update(last_seen_at=now)
    return updated


def mark_offline(*, pod_id: uuid.UUID | str, channel_name: str) -> None:
    Pod.objects.filter(pk=pod_id, channel_name=channel_name).update(channel_name="")


def online_pods() -> QuerySet[Pod]:
    """Active pods with a live connection that sent a heartbeat recently."""
    horizon = timezone.now() - timedelta(seconds=settings.POD_HEARTBEAT_TIMEOUT)
    return Pod.objects.filter(status=Pod.Status.ACTIVE, last_seen_at__gte=horizon).exclude(
        Q(channel_name="")
    )


def owner_paused(pod_id: uuid.UUID | str) -> bool:
    """Whether the pod's owner paused all training (its channel is then closed with 4423)."""
    owner = Pod.objects.filter(pk=pod_id).values_list("owner_id", flat=True).first()
    if owner is None:
        return False
    return DataSubject.objects.filter(user_id=owner, training_paused=True).exists()
