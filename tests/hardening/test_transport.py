"""Behind a TLS proxy: plain HTTP is redirected and HSTS is sent (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]


def transport_settings(**env: str) -> dict[str, Any]:
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_PROXY_SSL_HEADER, s.EMAIL_BACKEND, s.EMAIL_USE_TLS, s.EMAIL_USE_SSL]))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL", "BEHIND", "SECURE"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "dataspace.settings",
            "PYTHONPATH": str(ROOT),
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    names = ["redirect", "hsts", "proxy_header", "email", "tls", "ssl"]
    return dict(zip(names, json.loads(result.stdout.strip().splitlines()[-1]), strict=True))


def test_behind_proxy_turns_on_redirect_and_hsts() -> None:
    direct = transport_settings()
    assert (direct["redirect"], direct["hsts"], direct["proxy_header"]) == (False, 0, None)
    proxied = transport_settings(BEHIND_PROXY="1")
    assert proxied["redirect"] is True
    assert proxied["hsts"] == 31_536_000
    assert proxied["proxy_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_email_uses_smtp_once_a_host_is_set() -> None:
    assert transport_settings()["email"] == "django.core.mail.backends.console.EmailBackend"
    smtp = transport_settings(EMAIL_HOST="smtp.example.org")
    assert smtp["email"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (smtp["tls"], smtp["ssl"]) == (True, False)
    implicit = transport_settings(EMAIL_HOST="smtp.example.org", EMAIL_PORT="465")
    assert (implicit["tls"], implicit["ssl"]) == (False, True)


@pytest.mark.django_db
def test_plain_http_is_redirected_and_https_gets_hsts(settings: Any) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    plain = Client().get("/accounts/login/")
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/accounts/login/"
    secure = Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000"
    # Container health checks call the service directly over plain HTTP.
    assert Client().get("/healthz").status_code == 200
