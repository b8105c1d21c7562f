"""OAuth2 scopes per application: a provider's client gets provider scopes, a pod only ``pod``.

django-oauth-toolkit checks every requested scope against ``get_available_scopes`` for the
client, so a pod token can never carry a provider scope and vice versa (RFC 6749 section 3.3).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from oauth2_provider.scopes import BaseScopes

PROVIDER_SCOPES = ("requests:write", "requests:read", "models:read")
POD_SCOPES = ("pod",)


def scopes_for(application: Any) -> list[str]:
    if application is None:
        return []
    from .models import ProviderClient

    if ProviderClient.objects.filter(application=application).exists():
        return list(PROVIDER_SCOPES)
    if application.client_id == settings.POD_CLIENT_ID:
        return list(POD_SCOPES)
    return []


class ApplicationScopes(BaseScopes):  # type: ignore[misc]
    def get_all_scopes(self) -> dict[str, str]:
        scopes: dict[str, str] = settings.OAUTH2_PROVIDER["SCOPES"]  # type: ignore[assignment]
        return dict(scopes)

    def get_available_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        return scopes_for(application)

    def get_default_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        return scopes_for(application)
