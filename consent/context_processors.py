"""Template context for every portal page: how many inbox messages the person has not read."""

from __future__ import annotations

from django.http import HttpRequest

from .models import Notification


def inbox(request: HttpRequest) -> dict[str, int]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"inbox_unread": Notification.objects.filter(user=user, read_at__isnull=True).count()}
