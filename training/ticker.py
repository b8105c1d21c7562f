"""The rounds clock inside the web process, for the embedded default (no Celery beat there).

An asyncio task on the server's own event loop calls :func:`training.orchestrator.rounds_tick`
every ``ROUNDS_TICK_SECONDS``, through ``sync_to_async`` on the same thread as every other
database call of the process, so messages it sends to pods go through the process's channel
layer on the right loop. It starts with the first pod connection (rounds need pods).
Production leaves ``ROUNDS_TICK_IN_PROCESS`` off and runs the same tick on Celery beat.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)
_task: asyncio.Task[None] | None = None


def _tick_once() -> None:
    from . import orchestrator

    close_old_connections()
    try:
        orchestrator.rounds_tick()
    except Exception:  # a failed tick is retried on the next one; never kill the clock
        logger.exception("rounds tick failed")
    finally:
        close_old_connections()


async def _loop() -> None:
    tick = sync_to_async(_tick_once, thread_sensitive=True)
    while True:
        await asyncio.sleep(settings.ROUNDS_TICK_SECONDS)
        await tick()


def ensure_running() -> bool:
    """Start the clock on the running loop once, if this process is meant to run it."""
    global _task
    if not settings.ROUNDS_TICK_IN_PROCESS:
        return False
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_loop())
        logger.info("rounds clock running in-process every %ss", settings.ROUNDS_TICK_SECONDS)
    return True
