"""The deploy check fails (ERROR, not a warning) on each unsafe production setting, and on
.env.example's own values, so compose's `migrate` refuses to start with them (issue 13)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error

from dataspace.checks import check_production_settings
from tests.deploy.test_compose import env_example

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k3J9x-Qm2vT8pL0aZ7wY4bN6cR1dF5gH9jK2mS8uV3xW7yE0tP4q"
SAFE = {
    "DEBUG": False,
    "SECRET_KEY": GOOD_KEY,
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "EMAIL_HOST_PASSWORD": "a-real-smtp-password",
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 31_536_000,
}


def error_ids(settings: Any, **unsafe: Any) -> set[str]:
    for name, value in {**SAFE, **unsafe}.items():
        setattr(settings, name, value)
    return {m.id for m in check_production_settings(None) if isinstance(m, Error)} - {
        "dataspace.E001"
    }


def test_a_safe_configuration_passes(settings: Any) -> None:
    assert error_ids(settings) == set()


@pytest.mark.parametrize(
    ("unsafe", "expected"),
    [
        ({"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}, "dataspace.E002"),
        ({"EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend"}, "dataspace.E002"),
        ({"SECRET_KEY": "change-me"}, "dataspace.E003"),
        ({"SECRET_KEY": "test-secret-key-not-for-production"}, "dataspace.E003"),
        ({"SECRET_KEY": GOOD_KEY[:40]}, "dataspace.E003"),
        ({"SECRET_KEY": "ab" * 40}, "dataspace.E003"),
        ({"SECRET_KEY": "django-insecure-" + GOOD_KEY}, "dataspace.E003"),
        ({"SESSION_COOKIE_SECURE": False}, "dataspace.E004"),
        ({"CSRF_COOKIE_SECURE": False}, "dataspace.E004"),
        ({"SECURE_SSL_REDIRECT": False}, "dataspace.E005"),
        ({"SECURE_HSTS_SECONDS": 0}, "dataspace.E005"),
        ({"EMAIL_HOST_PASSWORD": "change-me-smtp-password"}, "dataspace.E006"),
        ({"DEBUG": True}, "dataspace.E007"),
    ],
)
def test_each_unsafe_setting_is_an_error(
    settings: Any, unsafe: dict[str, Any], expected: str
) -> None:
    assert error_ids(settings, **unsafe) == {expected}


def test_no_proxy_needs_no_redirect(settings: Any) -> None:
    assert error_ids(settings, SECURE_PROXY_SSL_HEADER=None, SECURE_SSL_REDIRECT=False) == set()


def deploy_check(**env: str) -> subprocess.CompletedProcess[str]:
    # As a deployment starts: none of the test session's own variables (the browser tests set
    # DJANGO_ALLOW_ASYNC_UNSAFE, which Django's deploy check rightly refuses).
    drop = {"DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def real_values() -> dict[str, str]:
    values = env_example()
    values.update(
        SECRET_KEY=GOOD_KEY,
        RECEIPT_SIGNING_KEY=base64.b64encode(os.urandom(32)).decode(),
        EMAIL_HOST_PASSWORD="a-real-smtp-password",
        DATABASE_URL=values["DATABASE_URL"].replace("change-me-database-password", "s3cr3t-pw"),
    )
    return values


def test_compose_migrate_refuses_the_example_values() -> None:
    # What docker/compose.yaml's `migrate` runs before anything starts, with `.env` copied
    # from .env.example and nothing replaced.
    values = env_example()
    values["RECEIPT_SIGNING_KEY"] = base64.b64encode(os.urandom(32)).decode()
    result = deploy_check(**values)
    assert result.returncode != 0
    assert "dataspace.E003" in result.stderr  # SECRET_KEY=change-me
    assert "dataspace.E006" in result.stderr  # the SMTP and database placeholders


def test_compose_migrate_accepts_the_example_with_its_placeholders_replaced() -> None:
    result = deploy_check(**real_values())
    assert result.returncode == 0, result.stderr
