"""Brute-force protection (issue 13): every entry point where a password or secret can be
guessed locks after LOGIN_FAILURE_LIMIT failures, per key and per address, says so plainly,
and unlocks after the cool-off; OAuth mounts only what the product uses."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application

from pods.agent.protocol import pairing_message
from pods.models import PairingIntent, Pod
from pods.services import pod_application
from tests.factories import PASSWORD, ProviderFactory, UserFactory
from training.services import provider_client_issue

pytestmark = pytest.mark.django_db
LIMIT = settings.AXES_FAILURE_LIMIT


def expire_lockouts() -> None:
    # As if the cool-off had passed since the last failure.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))


# --- portal login -----------------------------------------------------------------------------


def login(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_portal_login_locks_after_the_limit_and_says_how_it_unlocks() -> None:
    user = UserFactory()
    client = Client()
    for _ in range(LIMIT - 1):
        response = login(client, user.username, "wrong password")
        assert response.status_code == 200  # the form again, with an error
    response = login(client, user.username, "wrong password")
    assert response.status_code == 429
    # The right password no longer helps: locked.
    response = login(client, user.username, PASSWORD)
    assert response.status_code == 429
    text = response.content.decode()
    assert "Too many failed attempts" in text
    assert "unlocks by itself 15 minutes after the last failed attempt" in text
    assert "_auth_user_id" not in client.session

    expire_lockouts()
    response = login(client, user.username, PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_portal_login_locks_per_address_across_accounts() -> None:
    users = [UserFactory() for _ in range(LIMIT)]
    client = Client()
    for user in users:
        login(client, user.username, "wrong password")
    fresh = UserFactory()
    assert login(client, fresh.username, PASSWORD).status_code == 429
    # Another address is not affected.
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert login(other, fresh.username, PASSWORD).status_code == 302


def test_attempt_log_holds_no_password() -> None:
    user = UserFactory()
    login(Client(), user.username, "my-secret-guess")
    attempt = AccessAttempt.objects.get()
    assert "my-secret-guess" not in attempt.post_data


# --- /o/token/ ------------------------------------------------------------------------------


def token(client: Client, client_id: str, secret: str) -> Any:
    return client.post(
        "/o/token/",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def test_token_endpoint_locks_a_client_after_wrong_secrets() -> None:
    application, secret = provider_client_issue(provider=ProviderFactory())
    client = Client()
    statuses = [token(client, application.client_id, "guess").status_code for _ in range(LIMIT)]
    # The failure that reaches the limit is answered with the lockout already.
    assert statuses == [401] * (LIMIT - 1) + [429]
    response = token(client, application.client_id, secret)
    assert response.status_code == 429
    assert response.json()["error"] == "locked_out"
    assert "unlocks by itself" in response.json()["error_description"]
    assert int(response["Retry-After"]) == 15 * 60
    assert AccessToken.objects.count() == 0

    expire_lockouts()
    response = token(client, application.client_id, secret)
    assert response.status_code == 200, response.content
    assert "access_token" in response.json()


def test_token_endpoint_counts_http_basic_client_authentication_too() -> None:
    application, secret = provider_client_issue(provider=ProviderFactory())
    basic = base64.b64encode(f"{application.client_id}:guess".encode()).decode()
    client = Client(HTTP_AUTHORIZATION=f"Basic {basic}")
    statuses = [
        client.post("/o/token/", {"grant_type": "client_credentials"}).status_code
        for _ in range(LIMIT)
    ]
    assert statuses == [401] * (LIMIT - 1) + [429]
    assert token(Client(REMOTE_ADDR="10.1.1.1"), application.client_id, secret).status_code == 429


def test_password_grant_is_refused_even_for_a_password_client() -> None:
    user = UserFactory()
    app = Application.objects.create(
        name="legacy",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_PASSWORD,
    )
    response = Client().post(
        "/o/token/",
        {
            "grant_type": "password",
            "client_id": app.client_id,
            "username": user.username,
            "password": PASSWORD,
        },
    )
    assert response.status_code in (400, 401)
    assert AccessToken.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/o/applications/",
        "/o/applications/register/",
        "/o/authorize/",
        "/o/introspect/",
        "/o/authorized_tokens/",
        "/o/device/",
        "/o/register/",
        "/o/userinfo/",
    ],
)
def test_only_the_oauth_endpoints_the_product_uses_are_mounted(path: str) -> None:
    client = Client()
    client.force_login(UserFactory())
    applications = Application.objects.count()
    assert client.get(path).status_code == 404
    assert client.post(path, {"name": "x"}).status_code == 404
    assert Application.objects.count() == applications


def device_authorization() -> Any:
    return Client().post(
        "/o/device-authorization/",
        urlencode({"client_id": settings.POD_CLIENT_ID}),
        content_type="application/x-www-form-urlencoded",
    )


def test_the_used_oauth_endpoints_are_mounted() -> None:
    pod_application()
    response = device_authorization()
    assert response.status_code == 200, response.content
    assert "device_code" in response.json()
    assert Client().post("/o/revoke_token/", {"token": "x"}).status_code != 404


# --- pod pairing (API and page) ---------------------------------------------------------------


def pairing_body(device_code: str) -> dict[str, str]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    signature = key.sign(pairing_message(device_code, public))
    return {
        "device_code": device_code,
        "name": "Kitchen laptop",
        "public_key": base64.b64encode(public).decode(),
        "signature": base64.b64encode(signature).decode(),
    }


def test_pairing_api_locks_an_address_guessing_device_codes() -> None:
    pod_application()
    client = Client()
    codes = [
        client.post("/api/v1/pod/pairing/", pairing_body(f"guess-{n}"), "application/json").json()[
            "error"
        ]["code"]
        for n in range(LIMIT)
    ]
    assert codes == ["invalid_device_code"] * (LIMIT - 1) + ["locked_out"]
    device = device_authorization()
    real = pairing_body(device.json()["device_code"])
    response = client.post("/api/v1/pod/pairing/", real, "application/json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "locked_out"
    assert PairingIntent.objects.count() == 0
    assert (
        Client(REMOTE_ADDR="10.2.2.2")
        .post("/api/v1/pod/pairing/", real, "application/json")
        .status_code
        == 201
    )


def test_pairing_page_locks_an_account_guessing_user_codes() -> None:
    client = Client()
    client.force_login(UserFactory())
    statuses = [
        client.post("/pods/pair/", {"code": f"AAAA-BBB{n}"}).status_code for n in range(LIMIT)
    ]
    assert statuses == [400] * (LIMIT - 1) + [429]
    response = client.post("/pods/pair/", {"code": "AAAA-CCCC"})
    assert response.status_code == 429
    assert "unlocks by itself" in response.content.decode()
    response = client.post("/pods/pair/decide/", {"code": "AAAA-CCCC", "decision": "approve"})
    assert response.status_code == 429
    assert Pod.objects.count() == 0


def test_logging_into_your_own_account_does_not_reset_guesses_at_another() -> None:
    attacker, target = UserFactory(), UserFactory()
    client = Client()
    for _ in range(LIMIT - 1):
        assert login(client, target.username, "guess").status_code == 200
        assert login(Client(), attacker.username, PASSWORD).status_code in (302, 429)
    assert login(client, target.username, "guess").status_code == 429
    assert login(Client(REMOTE_ADDR="10.3.3.3"), target.username, PASSWORD).status_code == 429
