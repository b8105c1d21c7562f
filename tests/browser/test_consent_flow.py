"""A person signs up, reads a notice, agrees, and withdraws — in a real browser."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from consent.models import Consent
from tests.factories import PASSWORD, open_request

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_read_notice_agree_withdraw(page: Page, live_server: Any) -> None:
    model_request = open_request()

    # Sign up
    page.goto(f"{live_server.url}/accounts/signup/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Create your account")
    page.get_by_label("Username").fill("maria")
    page.get_by_label("E-mail").fill("maria@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, maria")

    # Read the notice (the request is listed among open requests; she has no pod yet)
    page.get_by_role("link", name=model_request.title).click()
    expect(page.get_by_role("heading", name="What leaves your device")).to_be_visible()
    expect(page.get_by_text("Only a masked model update")).to_be_visible()
    expect(page.get_by_text("mean radius", exact=False).first).to_be_visible()
    agree = page.get_by_role("button", name="Agree")
    decline = page.get_by_role("button", name="Decline")
    expect(agree).to_be_visible()
    expect(decline).to_be_visible()
    # Agree and Decline carry equal weight: the same size on screen.
    agree_box, decline_box = agree.bounding_box(), decline.bounding_box()
    assert agree_box and decline_box
    assert abs(agree_box["width"] - decline_box["width"]) < 1
    assert abs(agree_box["height"] - decline_box["height"]) < 1

    # Agree
    agree.click()
    expect(page.get_by_role("status")).to_contain_text(f"You agreed to “{model_request.title}”")
    expect(page.locator(".status").first).to_have_text("Given")
    assert Consent.objects.get(user__username="maria").status == "given"

    # Withdraw, with one click on the same screen
    page.get_by_role("button", name=f"Withdraw consent to “{model_request.title}”").click()
    expect(page.get_by_role("status")).to_contain_text("You withdrew your consent")
    expect(page.locator(".status").first).to_have_text("Withdrawn")
    page.get_by_text("History (2 events)").click()
    expect(page.get_by_text("Consent withdrawn", exact=False)).to_be_visible()
    assert Consent.objects.get(user__username="maria").status == "withdrawn"


def test_core_actions_work_with_keyboard_only(page: Page, live_server: Any) -> None:
    model_request = open_request()
    page.goto(f"{live_server.url}/accounts/signup/")
    expect(page.get_by_role("link", name="Skip to content")).to_have_attribute("href", "#main")
    page.get_by_label("Username").focus()
    page.keyboard.type("kofi")
    page.keyboard.press("Tab")
    page.keyboard.type("kofi@example.org")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, kofi")
    page.goto(f"{live_server.url}/requests/{model_request.pk}/")
    page.get_by_role("button", name="Decline").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("You declined")
    assert Consent.objects.get(user__username="kofi").status == "refused"
