"""System checks that fail loudly on unsafe production configuration.

``manage.py check --deploy --fail-level ERROR`` (run by the compose ``migrate`` service before
anything starts) fails on each of these. Django's own deploy checks only *warn* about most of
them (security.W004/W008/W009/W012/W016/W018); here they are errors, because each one has
been a way in: a guessable ``SECRET_KEY`` forges sessions, the console mail backend writes
password-reset links into the server log, insecure cookies leak sessions over plain HTTP.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

# What .env.example and the docs ship as placeholders; a value containing one is not a secret.
PLACEHOLDERS = ("change-me", "changeme", "insecure", "not-for-production", "example")
LOGGING_MAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
}
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE = 5


def _is_placeholder(value: str) -> bool:
    return any(marker in value.lower() for marker in PLACEHOLDERS)


@register("security", deploy=True)
def check_production_settings(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    if not settings.RECEIPT_SIGNING_KEY:
        problems.append(
            Error(
                "RECEIPT_SIGNING_KEY is not set: consent receipts would be signed by a key "
                "generated on this machine.",
                hint="Set RECEIPT_SIGNING_KEY to base64 of a 32-byte Ed25519 private key.",
                id="dataspace.E001",
            )
        )
    if settings.EMBEDDED:
        problems.append(
            Warning(
                "DATABASE_URL is not set: the embedded SQLite default is for demos only.",
                id="dataspace.W001",
            )
        )
    if not settings.REDIS_URL:
        problems.append(
            Warning(
                "REDIS_URL is not set: the in-memory channel layer does not span processes.",
                id="dataspace.W002",
            )
        )
    problems.extend(_check_mail())
    problems.extend(_check_secret_key())
    problems.extend(_check_transport())
    return problems


def _check_mail() -> list[CheckMessage]:
    if settings.DEBUG or settings.EMAIL_BACKEND not in LOGGING_MAIL_BACKENDS:
        return []
    return [
        Error(
            f"E-mail goes to {settings.EMAIL_BACKEND.rsplit('.', 2)[-2]} with DEBUG off: "
            "password-reset links would end up in a log instead of the person's inbox.",
            hint="Set EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD).",
            id="dataspace.E002",
        )
    ]


def _check_secret_key() -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    key = str(settings.SECRET_KEY)
    if (
        len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE
        or _is_placeholder(key)
        or key.startswith("django-insecure-")
    ):
        problems.append(
            Error(
                f"SECRET_KEY is a placeholder or too short (fewer than {SECRET_KEY_MIN_LENGTH} "
                "characters): sessions, CSRF tokens and password-reset links could be forged.",
                hint='python -c "import secrets; print(secrets.token_urlsafe(50))"',
                id="dataspace.E003",
            )
        )
    password = str(settings.DATABASES["default"].get("PASSWORD") or "")
    for name, value in (
        ("EMAIL_HOST_PASSWORD", str(settings.EMAIL_HOST_PASSWORD)),
        ("the DATABASE_URL password", password),
    ):
        if value and _is_placeholder(value):
            problems.append(
                Error(
                    f"{name} is still the example's placeholder.",
                    hint="Replace every change-me value of .env.example.",
                    id="dataspace.E006",
                )
            )
    return problems


def _check_transport() -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    if settings.DEBUG:
        problems.append(
            Error(
                "DEBUG is on: error pages would show settings and code to anyone.",
                id="dataspace.E007",
            )
        )
    if not (settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE):
        problems.append(
            Error(
                "Session and CSRF cookies are sent over plain HTTP (SECURE_COOKIES=0).",
                hint="Set SECURE_COOKIES=1 (browsers accept secure cookies on localhost too).",
                id="dataspace.E004",
            )
        )
    if settings.SECURE_PROXY_SSL_HEADER and (
        not settings.SECURE_SSL_REDIRECT or settings.SECURE_HSTS_SECONDS <= 0
    ):
        problems.append(
            Error(
                "BEHIND_PROXY is set but plain HTTP is not redirected to HTTPS or HSTS is off.",
                hint="Leave SECURE_SSL_REDIRECT and SECURE_HSTS_SECONDS at their defaults.",
                id="dataspace.E005",
            )
        )
    return problems
