"""The portal's language: Accept-Language, the switcher, and a person's own setting at login."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from consent import services
from consent.languages import SESSION_KEY
from consent.models import Consent, DataSubject
from tests.factories import PASSWORD, UserFactory, open_request
from training.models import ModelRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_request() -> ModelRequest:
    return open_request()


@pytest.fixture
def person(client: Client) -> User:
    user = UserFactory()
    client.force_login(user)
    return user


def test_english_is_the_default(client: Client, person: User, model_request: ModelRequest) -> None:
    response = client.get(reverse("portal:request", args=[model_request.pk]))
    body = response.content.decode()
    assert '<html lang="en">' in body
    assert "What leaves your device" in body
    assert response["Content-Language"] == "en"


def test_accept_language_de_shows_german(client: Client, model_request: ModelRequest) -> None:
    login = client.get(reverse("login"), headers={"accept-language": "de-DE,de;q=0.9"})
    assert '<html lang="de">' in login.content.decode()
    assert "<h1>Anmelden</h1>" in login.content.decode()
    client.force_login(UserFactory())
    response = client.get(
        reverse("portal:request", args=[model_request.pk]), headers={"accept-language": "de"}
    )
    body = response.content.decode()
    assert response["Content-Language"] == "de"
    assert "Was Ihr Gerät verlässt" in body
    assert "Meine Einwilligungen" in body
    notice = services.notice_current(model_request, "de")
    assert notice.content_hash in body
    assert 'name="language" value="de"' in body  # the form says which notice was read
    assert ">English</button>" in body  # each language named in itself in the switcher


def test_unsupported_accept_language_falls_back_to_english(client: Client) -> None:
    response = client.get(reverse("login"), headers={"accept-language": "es, it;q=0.8"})
    assert "<h1>Log in</h1>" in response.content.decode()


def test_switcher_stores_the_persons_language_and_returns_to_the_page(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    page = reverse("portal:request", args=[model_request.pk])
    response = client.post(reverse("portal:language"), {"language": "fr", "next": page})
    assert response.status_code == 302
    assert response["Location"] == page
    assert response.cookies["django_language"].value == "fr"
    assert DataSubject.objects.get(user=person).language == "fr"
    # The person's own setting wins over the browser's.
    body = client.get(page, headers={"accept-language": "de"}).content.decode()
    assert "Ce qui quitte votre appareil" in body


def test_own_language_is_honoured_at_login_on_another_device(
    client: Client, model_request: ModelRequest
) -> None:
    user = UserFactory()
    services.data_subject_for(user)
    DataSubject.objects.filter(user=user).update(language="de")
    other_device = Client(headers={"accept-language": "en"})
    response = other_device.post(
        reverse("login"), {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert other_device.session[SESSION_KEY] == "de"
    body = other_device.get(reverse("portal:home")).content.decode()
    assert '<html lang="de">' in body
    assert "Warten auf Ihre Entscheidung" in body


def test_switcher_refuses_an_unknown_language_and_changes_nothing(
    client: Client, person: User
) -> None:
    response = client.post(reverse("portal:language"), {"language": "xx"}, follow=True)
    assert "That language is not available" in response.content.decode()
    assert DataSubject.objects.get_or_create(user=person)[0].language == ""
    assert "django_language" not in client.cookies


def test_switcher_works_before_login_with_the_cookie_only(client: Client) -> None:
    response = client.post(
        reverse("portal:language"), {"language": "de", "next": reverse("login")}, follow=True
    )
    assert "<h1>Anmelden</h1>" in response.content.decode()
    assert not DataSubject.objects.exists()


def test_decision_in_french_records_the_french_notice(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    notice = services.notice_current(model_request, "fr")
    response = client.post(
        reverse("portal:decide", args=[model_request.pk]),
        {"decision": "agree", "notice_hash": notice.content_hash, "language": "fr"},
        headers={"accept-language": "fr"},
        follow=True,
    )
    assert f"Vous avez accepté « {model_request.title} »" in response.content.decode().replace(
        "\u00a0", " "
    )
    consent = Consent.objects.get(user=person)
    assert (consent.notice.language, consent.notice_hash) == ("fr", notice.content_hash)
    receipt = client.get(reverse("portal:receipt", args=[consent.pk])).json()
    assert receipt["receipt"]["notice"]["language"] == "fr"
    assert receipt["receipt"]["notice"]["hash"] == notice.content_hash


def test_a_language_picked_before_signing_up_becomes_the_persons_own(client: Client) -> None:
    client.post(reverse("portal:language"), {"language": "fr", "next": reverse("signup")})
    response = client.post(
        reverse("signup"),
        {
            "username": "lea",
            "email": "lea@example.org",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
        follow=True,
    )
    assert "Bonjour, lea" in response.content.decode()
    assert DataSubject.objects.get(user__username="lea").language == "fr"
