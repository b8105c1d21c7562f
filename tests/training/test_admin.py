from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from oauth2_provider.models import Application

from tests.factories import ProviderFactory
from training.models import ProviderClient

pytestmark = pytest.mark.django_db


def test_operator_issues_credentials_from_the_admin(client: Client) -> None:
    operator = User.objects.create_superuser("operator", "op@example.org", "pw-operator-123")
    provider = ProviderFactory()
    client.force_login(operator)
    response = client.post(
        "/admin/training/provider/",
        {"action": "issue_credentials", "_selected_action": [provider.pk]},
        follow=True,
    )
    match = re.search(r"client_id (\S+), client_secret (\S+)", response.content.decode())
    assert match
    application = Application.objects.get(client_id=match.group(1))
    assert ProviderClient.objects.get(application=application).provider == provider
    assert application.client_secret != match.group(2)  # stored hashed
