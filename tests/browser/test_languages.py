"""The portal in French and German, in a real browser: switch, read, agree, check the receipt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from consent import services
from consent.models import Consent, DataSubject
from tests.factories import PASSWORD, open_request

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_switch_to_french_agree_to_the_french_notice_and_the_receipt_says_so(
    page: Page, live_server: Any, tmp_path: Path
) -> None:
    model_request = open_request()
    page.goto(f"{live_server.url}/accounts/signup/")
    page.get_by_label("Username").fill("amelie")
    page.get_by_label("E-mail").fill("amelie@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, amelie")

    # Switch the portal to French: the page comes back in French, and the choice is hers.
    page.get_by_role("button", name="Français").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bonjour, amelie")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    assert DataSubject.objects.get(user__username="amelie").language == "fr"

    # Read the French notice; the provider's English purpose is named as English.
    page.get_by_role("link", name=model_request.title).click()
    expect(page.get_by_role("heading", name="Ce qui quitte votre appareil")).to_be_visible()
    expect(page.get_by_text("uniquement en anglais", exact=False)).to_be_visible()
    expect(page.get_by_text(model_request.purpose)).to_have_attribute("lang", "en")
    shown_hash = page.locator("#notice-hash").inner_text()
    french = services.notice_current(model_request, "fr")
    assert shown_hash == french.content_hash
    assert shown_hash != services.notice_current(model_request, "en").content_hash

    # Agree: the message, the status and the history are in French.
    page.get_by_role("button", name="J’accepte").click()
    expect(page.get_by_role("status")).to_contain_text("Vous avez accepté")
    expect(page.locator(".status").first).to_have_text("Donné")
    consent = Consent.objects.get(user__username="amelie")
    assert (consent.notice.language, consent.notice_hash) == ("fr", shown_hash)

    # The signed receipt, downloaded as she would, names French and that text's hash.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Télécharger le reçu signé").click()
    path = tmp_path / "receipt.json"
    download_info.value.save_as(path)
    receipt = json.loads(path.read_text(encoding="utf-8"))["receipt"]
    assert receipt["notice"]["language"] == "fr"
    assert receipt["notice"]["hash"] == shown_hash
    assert receipt["purpose"]["model_request"]["plan_hash"] == consent.plan_hash


def test_a_german_browser_gets_german_pages(browser: Browser, live_server: Any) -> None:
    model_request = open_request()
    context = browser.new_context(locale="de-DE")
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/accounts/signup/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Ihr Konto erstellen")
        expect(page.locator("html")).to_have_attribute("lang", "de")
        page.get_by_label("Benutzername").fill("jonas")
        page.get_by_label("E-Mail-Adresse").fill("jonas@example.org")
        page.get_by_label("Passwort", exact=True).fill(PASSWORD)
        page.get_by_label("Passwort bestätigen").fill(PASSWORD)
        page.get_by_role("button", name="Konto erstellen").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Hallo, jonas")
        page.get_by_role("link", name=model_request.title).click()
        expect(page.get_by_role("heading", name="Was Ihr Gerät verlässt")).to_be_visible()
        expect(page.get_by_role("button", name="Ich stimme zu")).to_be_visible()
        expect(page.get_by_role("button", name="Ich lehne ab")).to_be_visible()
    finally:
        context.close()
