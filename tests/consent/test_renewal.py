"""Renewal: same consent, same pod, same history; one more chained event and a new receipt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from consent import receipts, services
from consent.models import Consent, PrivacyNotice
from consent.renewal import consent_renew, notice_changed
from consent.selectors import consent_log_verify
from dataspace.errors import DomainError
from tests.factories import PodFactory, UserFactory, open_request

pytestmark = pytest.mark.django_db


def test_renewal_keeps_pod_and_history_and_adds_a_chained_event(settings: Any) -> None:
    settings.CONSENT_TTL_DAYS = 30
    model_request = open_request()
    user = UserFactory()
    pod = PodFactory(owner=user)
    then = timezone.now() - timedelta(days=20)
    consent = services.consent_grant(user=user, model_request=model_request, pod=pod, now=then)
    old_expiry = consent.expires_at

    renewed = consent_renew(user=user, consent=consent)

    assert renewed.pk == consent.pk and renewed.pod == pod
    assert renewed.status == Consent.Status.GIVEN
    assert renewed.given_at == then
    assert renewed.expires_at is not None and old_expiry is not None
    assert renewed.expires_at > old_expiry + timedelta(days=19)
    events = list(renewed.events.order_by("seq"))
    assert [e.event_type for e in events] == ["given", "renewed"]
    assert events[1].prev_hash == events[0].hash
    assert events[1].detail["pod"] == pod.fingerprint
    assert events[1].detail["previous_expires_at"] == old_expiry.isoformat()
    assert consent_log_verify() == []
    receipt = receipts.receipt_build(renewed)
    assert [e["type"] for e in receipt["events"]] == ["given", "renewed"]
    assert receipt["consent"]["expires_at"] == renewed.expires_at.isoformat()


def test_an_expired_consent_can_be_renewed_and_a_refusal_cannot() -> None:
    model_request = open_request()
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=model_request)
    services.consent_expire_due(now=timezone.now() + timedelta(days=400))
    renewed = consent_renew(user=user, consent=consent)
    assert renewed.status == Consent.Status.GIVEN
    assert consent_log_verify() == []

    other = UserFactory()
    refused = services.consent_refuse(user=other, model_request=model_request)
    with pytest.raises(DomainError) as raised:
        consent_renew(user=other, consent=refused)
    assert raised.value.code == "not_renewable"


def _change_notice(model_request: Any) -> PrivacyNotice:
    current = services.notice_current(model_request)
    return PrivacyNotice.objects.create(
        model_request=model_request,
        version=current.version + 1,
        language=current.language,
        sections=[*current.sections, {"heading": "Changed", "paragraphs": ["A new line."]}],
        text=current.text + "\nA new line.",
        content_hash="f" * 64,
    )


def test_renewal_re_shows_a_changed_notice_and_needs_it_seen() -> None:
    model_request = open_request()
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=model_request)
    new = _change_notice(model_request)
    with pytest.raises(DomainError) as raised:
        consent_renew(user=user, consent=consent)
    assert raised.value.code == "notice_changed"

    client = Client()
    client.force_login(user)
    page = client.get(f"/consents/{consent.pk}/renew/")
    assert page.status_code == 200
    assert b"The notice changed since you agreed" in page.content
    assert b"A new line." in page.content
    response = client.post(f"/consents/{consent.pk}/renew/", {"notice_hash": new.content_hash})
    assert response.status_code == 302 and response["Location"] == "/consents/"
    consent.refresh_from_db()
    assert consent.notice_hash == new.content_hash
    last = consent.events.order_by("-seq").first()
    assert last is not None and last.event_type == "renewed"
    assert last.notice_hash == new.content_hash and last.detail["notice_changed"] is True
    assert consent_log_verify() == []


def test_another_persons_consent_cannot_be_renewed() -> None:
    model_request = open_request()
    owner, intruder = UserFactory(), UserFactory()
    consent = services.consent_grant(user=owner, model_request=model_request)
    client = Client()
    client.force_login(intruder)
    assert client.get(f"/consents/{consent.pk}/renew/").status_code == 404
    response = client.post(f"/consents/{consent.pk}/renew/", {"notice_hash": "0" * 64})
    assert response.status_code == 404
    assert consent.events.count() == 1


def test_a_consent_given_in_french_renews_against_the_french_notice() -> None:
    model_request = open_request()
    user = UserFactory()
    consent = services.consent_grant(
        user=user, model_request=model_request, pod=PodFactory(owner=user), language="fr"
    )
    assert not notice_changed(consent)  # the English notice is another text, not a change

    renewed = consent_renew(user=user, consent=consent)

    french = services.notice_current(model_request, "fr")
    assert (renewed.notice_id, renewed.notice_hash) == (french.pk, french.content_hash)
    assert renewed.plan_hash == services.notice_plan_hash(model_request, french)
    assert renewed.events.order_by("seq").last().detail["notice_changed"] is False

    # read in German now: another text than the one agreed to, so it must have been shown
    with pytest.raises(DomainError):
        consent_renew(user=user, consent=renewed, language="de")
    german = services.notice_current(model_request, "de")
    again = consent_renew(
        user=user, consent=renewed, language="de", seen_notice_hash=german.content_hash
    )
    assert again.notice_hash == german.content_hash
    assert again.plan_hash == services.notice_plan_hash(model_request, german)
