"""The notification scheduler: expire consents, apply standing rules, notify, e-mail.

:func:`notifications_tick` runs every ``NOTIFICATIONS_TICK_SECONDS``: on Celery beat in
production (``consent.tasks.notifications_tick``, next to the rounds clock's ``rounds_tick``),
or in a daemon thread of the web process in the embedded default (:func:`start_in_process`,
called by ``dataspace.asgi`` when ``NOTIFICATIONS_IN_PROCESS`` is on). Every step is
idempotent, so two schedulers at once, or a retried tick, send nothing twice.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from .notify import notifications_produce, notifications_send
from .rules import rules_apply_all
from .services import consent_expire_due

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    expired: int
    declined: int
    notified: int
    emailed: int


def notifications_tick(now: datetime | None = None) -> TickResult:
    now = now or timezone.now()
    expired = consent_expire_due(now=now)
    declined = rules_apply_all(now)
    notified = notifications_produce(now)
    emailed = notifications_send(now)
    return TickResult(expired, declined, notified, emailed)


_thread: threading.Thread | None = None
_stop = threading.Event()
_lock = threading.Lock()


def _loop(stop: threading.Event) -> None:
    while not stop.wait(settings.NOTIFICATIONS_TICK_SECONDS):
        close_old_connections()
        try:
            notifications_tick()
        except Exception:  # a failed tick is retried on the next one; never kill the loop
            logger.exception("notifications tick failed")
        finally:
            close_old_connections()


def start_in_process() -> bool:
    """Start the in-process scheduler thread once, if this process is meant to run it."""
    global _thread
    if not settings.NOTIFICATIONS_IN_PROCESS:
        return False
    with _lock:
        if _thread is None or not _thread.is_alive():
            _stop.clear()
            _thread = threading.Thread(
                target=_loop, args=(_stop,), name="notifications", daemon=True
            )
            _thread.start()
            logger.info(
                "notifications scheduler running in-process every %ss",
                settings.NOTIFICATIONS_TICK_SECONDS,
            )
    return True


def stop_in_process(timeout: float = 30.0) -> None:
    """Stop the in-process scheduler after its current tick (tests; a server simply exits)."""
    global _thread
    with _lock:
        _stop.set()
        if _thread is not None:
            _thread.join(timeout)
        _thread = None
