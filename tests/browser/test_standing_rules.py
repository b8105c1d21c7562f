"""Standing rules, decisions made by a rule, changing them, and renewal from an expiry e-mail —
in a real browser against a live server."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import Page, expect

from consent.models import Consent
from consent.scheduler import notifications_tick
from tests.factories import PASSWORD, ProviderFactory, open_request

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_rule_declines_then_decide_by_hand_then_renew_from_email(
    page: Page, live_server: Any, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = live_server.url
    acme = ProviderFactory(name="Acme Health")

    # Sign up
    page.goto(f"{live_server.url}/accounts/signup/")
    page.get_by_label("Username").fill("lena")
    page.get_by_label("E-mail").fill("lena@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, lena")

    # A rule: decline special-category requests from Acme Health
    page.get_by_role("link", name="My rules").click()
    page.get_by_label("Provider").select_option(label="Acme Health")
    page.get_by_label("Special-category data").select_option(label="Only special-category data")
    page.get_by_label("Decline automatically").check()
    page.get_by_role("button", name="Save rule").click()
    text = "Decline requests from Acme Health on special-category (GDPR Art. 9) data automatically."
    expect(page.get_by_role("status")).to_contain_text(f"Rule saved: {text}")
    expect(page.locator(".rule-text")).to_have_text(text)

    # A new matching request starts recruiting: declined without her
    model_request = open_request(provider=acme)
    consent = Consent.objects.get(user__username="lena")
    assert consent.status == Consent.Status.REFUSED
    page.get_by_role("link", name="My consents").click()
    expect(page.locator(".status").first).to_have_text("Refused")
    expect(page.locator(".by-rule")).to_contain_text(text)
    page.get_by_text("History (1 event)").click()
    expect(page.get_by_text("via your standing rule", exact=False)).to_be_visible()
    receipt = page.request.get(f"{live_server.url}/consents/{consent.pk}/receipt.json").json()
    assert receipt["receipt"]["consent"]["status"] == "dpv:ConsentRefused"
    assert receipt["receipt"]["events"][0]["method"] == "rule"
    assert receipt["receipt"]["events"][0]["rule"]["text"] == text

    # Change the rule with one click from My consents: ask me instead
    page.get_by_role("link", name="Change this rule").click()
    page.get_by_label("Ask me").check()
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".rule-text")).to_have_text(
        "Ask me about requests from Acme Health on special-category (GDPR Art. 9) data."
    )

    # Decide by hand: agree
    page.get_by_role("link", name="My consents").click()
    page.get_by_role("link", name=f"Decide “{model_request.title}” yourself").click()
    page.get_by_role("button", name="Agree").click()
    expect(page.get_by_role("status")).to_contain_text(f"You agreed to “{model_request.title}”")
    expect(page.locator(".status").first).to_have_text("Given")
    expect(page.locator(".by-rule")).to_have_count(0)

    # Ten days before expiry the scheduler e-mails her a renewal link; she renews from it
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() + timedelta(days=10))
    notifications_tick()
    notifications_tick()
    expiring = [m for m in mail.outbox if "expires on" in m.subject]
    assert len(expiring) == 1 and expiring[0].to == ["lena@example.org"]
    match = re.search(re.escape(live_server.url) + r"/consents/[^/\s]+/renew/", expiring[0].body)
    assert match is not None
    page.goto(match.group(0))
    page.get_by_role("button", name="Renew").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"You renewed your consent to “{model_request.title}”"
    )
    consent.refresh_from_db()
    assert consent.expires_at is not None and consent.expires_at > timezone.now() + timedelta(
        days=300
    )
    events = [e.event_type for e in consent.events.order_by("seq")]
    assert events == ["refused", "given", "renewed"]
    receipt = page.request.get(f"{live_server.url}/consents/{consent.pk}/receipt.json").json()
    assert [e["type"] for e in receipt["receipt"]["events"]] == events
    assert json.dumps(receipt).count("lena@example.org") == 0
