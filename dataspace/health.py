"""Liveness and readiness probes."""

import logging

from django.db import connection
from django.db.utils import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from training.rounds.clock import clock_health

logger = logging.getLogger(__name__)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """The database answers; otherwise 503 so a load balancer stops sending traffic.

    Also whether a rounds clock ticks (Celery beat in production): without one no request
    starts training and no stage deadline passes. This process still serves, so a clock that
    is missing or stopped makes the answer ``degraded`` (and a warning in the log), not 503.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return JsonResponse(
            {"status": "unavailable", "checks": {"database": "unreachable"}}, status=503
        )
    clock, age = clock_health()
    body: dict[str, object] = {
        "status": "ok" if clock in ("ok", "idle") else "degraded",
        "checks": {"database": "ok", "rounds_clock": clock},
    }
    if age is not None:
        body["rounds_clock_last_tick_s"] = round(age, 1)
    if clock in ("never", "stale"):
        logger.warning(
            "no rounds clock has ticked %s: run Celery beat (training.tasks.rounds_tick) "
            "or set ROUNDS_TICK_IN_PROCESS=1",
            "yet" if age is None else f"for {age:.0f} s",
        )
    return JsonResponse(body)
