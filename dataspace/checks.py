"""System checks that fail loudly on unsafe production configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register


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
    return problems
