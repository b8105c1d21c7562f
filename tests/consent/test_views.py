"""Portal views: status, content, and nothing written when an action is refused."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from consent import services
from consent.models import Consent, ConsentEvent, DataSubject
from tests.factories import PASSWORD, PodFactory, UserFactory, open_request
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


def decide(client: Client, model_request: ModelRequest, decision: str, **extra: str):  # type: ignore[no-untyped-def]
    notice = services.notice_current(model_request)
    data = {"decision": decision, "notice_hash": notice.content_hash, **extra}
    return client.post(reverse("portal:decide", args=[model_request.pk]), data, follow=True)


def test_portal_requires_login(client: Client) -> None:
    response = client.get(reverse("portal:home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_signup_creates_account_logs_in_and_greets(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {
            "username": "nora",
            "email": "nora@example.org",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Hello, nora" in response.content.decode()
    assert DataSubject.objects.filter(user__username="nora").exists()


def test_signup_with_mismatched_passwords_writes_nothing(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {
            "username": "nora",
            "email": "nora@example.org",
            "password1": PASSWORD,
            "password2": "other",
        },
    )
    assert response.status_code == 400
    assert "didn’t match" in response.content.decode()
    assert not User.objects.filter(username="nora").exists()


def test_home_lists_awaiting_request_for_held_category(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    PodFactory(owner=person)
    response = client.get(reverse("portal:home"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Awaiting your decision" in page
    assert model_request.title in page
    assert reverse("portal:request", args=[model_request.pk]) in page


def test_notice_page_shows_what_a_person_must_know(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    response = client.get(reverse("portal:request", args=[model_request.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    for expected in (
        model_request.provider.name,
        model_request.provider.dpo_email,
        "What leaves your device",
        "masked model update",
        "mean radius",
        "diagnosis",
        f"at least {model_request.min_participants} people",
        "If you change your mind",
        "Models already trained",
        f"kept for {model_request.retention_days} days",
        services.notice_current(model_request).content_hash,
        ">Agree</button>",
        ">Decline</button>",
    ):
        assert expected in page, expected


def test_agree_records_consent_and_shows_it(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    pod = PodFactory(owner=person)
    response = decide(client, model_request, "agree", pod=str(pod.pk))
    page = response.content.decode()
    assert response.status_code == 200
    assert f"You agreed to “{model_request.title}”" in page
    assert "Withdraw consent to" in page
    consent = Consent.objects.get(user=person)
    assert consent.status == "given" and consent.pod == pod


def test_decline_records_refusal(client: Client, person: User, model_request: ModelRequest) -> None:
    response = decide(client, model_request, "decline")
    assert "You declined" in response.content.decode()
    assert Consent.objects.get(user=person).status == "refused"


def test_withdraw_from_my_consents_and_twice_is_a_clear_message(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    decide(client, model_request, "agree")
    consent = Consent.objects.get(user=person)
    url = reverse("portal:withdraw", args=[consent.pk])

    first = client.post(url, follow=True)
    second = client.post(url, follow=True)

    assert "You withdrew your consent" in first.content.decode()
    assert "You already withdrew this consent" in second.content.decode()
    assert ConsentEvent.objects.filter(consent=consent).count() == 2


def test_malformed_decision_writes_nothing(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    response = client.post(
        reverse("portal:decide", args=[model_request.pk]),
        {"decision": "maybe", "notice_hash": "x"},
        follow=True,
    )
    assert "could not be read; nothing was recorded" in response.content.decode()
    assert Consent.objects.count() == 0


def test_another_persons_consent_is_404(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    other = UserFactory()
    consent = services.consent_grant(user=other, model_request=model_request)
    assert client.get(reverse("portal:receipt", args=[consent.pk])).status_code == 404
    assert client.post(reverse("portal:withdraw", args=[consent.pk])).status_code == 404
    consent.refresh_from_db()
    assert consent.status == "given"


def test_csrf_is_enforced_on_decisions_and_withdrawals(model_request: ModelRequest) -> None:
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=open_request(title="Other request"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    notice = services.notice_current(model_request)

    missing = client.post(
        reverse("portal:decide", args=[model_request.pk]),
        {"decision": "agree", "notice_hash": notice.content_hash},
    )
    forged = client.post(
        reverse("portal:withdraw", args=[consent.pk]),
        {"csrfmiddlewaretoken": "forged" * 8},
        HTTP_X_CSRFTOKEN="forged" * 8,
    )

    assert missing.status_code == 403
    assert forged.status_code == 403
    assert not Consent.objects.filter(model_request=model_request).exists()
    consent.refresh_from_db()
    assert consent.status == "given"


def test_pause_switch(client: Client, person: User) -> None:
    paused = client.post(reverse("portal:pause"), {"paused": "1"}, follow=True)
    assert "All training is paused" in paused.content.decode()
    assert DataSubject.objects.get(user=person).training_paused
    resumed = client.post(reverse("portal:pause"), {"paused": "0"}, follow=True)
    assert "Training resumed" in resumed.content.decode()
    assert not DataSubject.objects.get(user=person).training_paused


def test_export_holds_every_consent_as_signed_receipt(
    client: Client, person: User, model_request: ModelRequest
) -> None:
    decide(client, model_request, "agree")
    other = open_request(title="Second request")
    decide(client, other, "decline")
    response = client.get(reverse("portal:export"))
    body = response.json()
    assert response.status_code == 200
    assert {c["receipt"]["purpose"]["model_request"]["title"] for c in body["consents"]} == {
        model_request.title,
        "Second request",
    }
    assert all("signature" in c for c in body["consents"])


def test_login_and_logout(client: Client) -> None:
    user = UserFactory()
    response = client.post(
        reverse("login"), {"username": user.username, "password": PASSWORD}, follow=True
    )
    assert f"Hello, {user.username}" in response.content.decode()
    out = client.post(reverse("logout"), follow=True)
    assert "Log in" in out.content.decode()
    assert client.get(reverse("portal:home")).status_code == 302


def test_password_reset_sends_a_link(client: Client, mailoutbox: list) -> None:  # type: ignore[type-arg]
    user = UserFactory()
    response = client.post(reverse("password_reset"), {"email": user.email}, follow=True)
    assert "Check your e-mail" in response.content.decode()
    assert len(mailoutbox) == 1
    assert "/accounts/reset/" in mailoutbox[0].body
