"""Settings read from the environment: the PostgreSQL connection pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_options(**env: str) -> dict[str, object]:
    """OPTIONS of the default database as a fresh process configures it from ``env``."""
    script = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {})))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "DJANGO_SETTINGS_MODULE": "dataspace.settings", "DEBUG": "1", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    options: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return options


def test_postgresql_gets_a_pool_sized_from_the_environment() -> None:
    url = "postgres://u@db.example:5432/d"
    assert database_options(DATABASE_URL=url)["pool"] == {
        "min_size": 2,
        "max_size": 10,
        "timeout": 10,
    }
    sized = database_options(
        DATABASE_URL=url, DATABASE_POOL_MAX_SIZE="3", DATABASE_POOL_MIN_SIZE="5"
    )
    assert sized["pool"] == {"min_size": 3, "max_size": 3, "timeout": 10}
    assert "pool" not in database_options(DATABASE_URL=url, DATABASE_POOL_MAX_SIZE="0")
    assert "pool" not in database_options()  # the embedded SQLite default


@pytest.mark.django_db(transaction=True)
def test_a_closed_connection_goes_back_to_the_pool_and_is_reused() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    assert connection.pool is not None

    def backend() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid: int = cursor.fetchone()[0]
        connection.close()
        return pid

    # Without a pool each close ends a server process and the next query starts a new one.
    # The pool hands its idle connections out in turn (earlier tests may have left several
    # idle), so ask more times than it can hold: only reuse keeps the processes within its size.
    size = connection.pool.max_size
    pids = {backend() for _ in range(2 * size + 1)}
    assert len(pids) <= size


def settings_value(expression: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``expression`` over the settings a fresh process configures from ``env`` (JSON)."""
    script = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({expression}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "REDIS"))}
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "DJANGO_SETTINGS_MODULE": "dataspace.settings", "DEBUG": "1", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_redis_tasks_are_redelivered_within_a_stage_and_idle_sockets_outlast_a_receive() -> None:
    """Issue 12: kombu's default visibility timeout (1 h) left a killed worker's tasks unacked
    past every deadline; redis-py's default 5 s socket timeout cut channels-redis's 5 s
    blocking receive short."""
    result = settings_value(
        "[settings.CELERY_BROKER_TRANSPORT_OPTIONS, settings.ROUND_STAGE_SECONDS,"
        " settings.CELERY_TASK_ACKS_LATE, settings.CHANNEL_LAYERS['default']]",
        REDIS_URL="redis://redis.example:6379/0",
    )
    assert result.returncode == 0, result.stderr
    options, stage, acks_late, layer = json.loads(result.stdout.strip().splitlines()[-1])
    assert acks_late is True
    assert 0 < options["visibility_timeout"] < stage
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 5
    assert layer["CONFIG"]["hosts"] == ["redis://redis.example:6379/0"]
    from django.utils.module_loading import import_string
    from redis._defaults import DEFAULT_SOCKET_TIMEOUT

    backend = import_string(layer["BACKEND"])
    assert backend.brpop_timeout < DEFAULT_SOCKET_TIMEOUT  # a blocking receive ends first


def test_a_visibility_timeout_longer_than_a_stage_is_refused() -> None:
    result = settings_value(
        "settings.CELERY_BROKER_TRANSPORT_OPTIONS",
        CELERY_VISIBILITY_TIMEOUT="90",
        ROUND_STAGE_SECONDS="60",
    )
    assert result.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT must be positive and shorter than ROUND_STAGE_SECONDS" in (
        result.stderr
    )


def test_the_in_memory_layer_sweeps_expired_messages_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Channels' sweep walks every channel and group; the embedded default's layer runs it at
    most once a second (a round's messages to n pods cost O(n²) otherwise)."""
    from dataspace import channel_layers

    layer = channel_layers.InMemoryChannelLayer()
    sweeps: list[float] = []
    monkeypatch.setattr(
        channel_layers._InMemoryChannelLayer, "_clean_expired", lambda self: sweeps.append(1)
    )
    clock = [100.0]
    monkeypatch.setattr(channel_layers, "monotonic", lambda: clock[0])
    for _ in range(50):
        layer._clean_expired()
    assert len(sweeps) == 1
    clock[0] += channel_layers.SWEEP_SECONDS
    layer._clean_expired()
    assert len(sweeps) == 2
