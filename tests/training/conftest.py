from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken

from pods.services import pod_application
from tests.factories import ProviderFactory, breast_category
from training.models import Provider
from training.services import provider_client_issue

TokenMaker = Callable[..., str]


@pytest.fixture
def provider() -> Provider:
    breast_category()
    return ProviderFactory()


@pytest.fixture
def make_token(db: Any) -> TokenMaker:
    """An access token as django-oauth-toolkit would issue it, for a provider or the pod app."""

    def make(
        provider: Provider | None = None,
        scope: str = "requests:write requests:read models:read",
        expires_in: int = 3600,
    ) -> str:
        if provider is not None:
            application, _ = provider_client_issue(provider=provider)
        else:
            application = pod_application()
        token = AccessToken.objects.create(
            application=application,
            token=f"tok-{AccessToken.objects.count()}-{application.pk}",
            expires=timezone.now() + timedelta(seconds=expires_in),
            scope=scope,
        )
        return token.token

    return make


@pytest.fixture
def api(provider: Provider, make_token: TokenMaker) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {make_token(provider)}")
