"""Celery entry points of the consent domain (found by ``autodiscover_tasks``)."""

from __future__ import annotations

from celery import shared_task

from . import scheduler


@shared_task(ignore_result=True)
def notifications_tick() -> None:
    """Expire consents, apply standing rules, notify and e-mail (scheduled by Celery beat)."""
    scheduler.notifications_tick()
