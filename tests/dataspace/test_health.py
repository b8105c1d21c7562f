from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db.utils import OperationalError
from django.test import Client


def test_healthz_answers_without_the_database(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_the_database(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_fails(client: Client) -> None:
    with mock.patch("dataspace.health.connection.cursor", side_effect=OperationalError("down")):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "unreachable"}}


@pytest.mark.django_db
def test_readyz_says_when_no_rounds_clock_ticks(client: Client, settings: Any) -> None:
    """Issue 12, defect 8: without Celery beat nothing left recruiting, and nothing said so."""
    import time

    from django.core.cache import cache

    from training.rounds.clock import LAST_TICK_KEY, rounds_tick

    settings.ROUNDS_TICK_IN_PROCESS = False  # production: the clock is Celery beat
    settings.ROUNDS_CLOCK_STALE_SECONDS = 30
    cache.delete(LAST_TICK_KEY)
    never = client.get("/readyz")
    assert never.status_code == 200  # this process still serves
    assert never.json() == {
        "status": "degraded",
        "checks": {"database": "ok", "rounds_clock": "never"},
    }

    rounds_tick()
    ticking = client.get("/readyz").json()
    assert ticking["status"] == "ok" and ticking["checks"]["rounds_clock"] == "ok"
    assert 0 <= ticking["rounds_clock_last_tick_s"] < 5

    cache.set(LAST_TICK_KEY, time.time() - 120, timeout=None)  # the clock stopped
    stale = client.get("/readyz").json()
    assert stale["status"] == "degraded" and stale["checks"]["rounds_clock"] == "stale"
    assert stale["rounds_clock_last_tick_s"] >= 120

    settings.ROUNDS_TICK_IN_PROCESS = True  # embedded: starts with the first pod connection
    cache.delete(LAST_TICK_KEY)
    assert client.get("/readyz").json()["checks"]["rounds_clock"] == "idle"
