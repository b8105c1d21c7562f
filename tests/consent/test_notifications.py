"""Notifications against a real SMTP server on loopback (aiosmtpd): the right messages, once
each, with working links; the scheduler run twice sends nothing twice."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from consent import services
from consent.models import ConsentRule, DataSubject, Notification, NotificationPreference
from consent.notify import notifications_send
from consent.scheduler import notifications_tick
from tests.factories import PodFactory, UserFactory, open_request
from tests.smtp import Inbox, free_port, smtp_server
from training.models import ModelRequest

pytestmark = pytest.mark.django_db

SITE = "http://portal.test"


@pytest.fixture
def smtp(settings: Any) -> Iterator[Inbox]:
    inbox, controller = smtp_server()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.SITE_URL = SITE
    settings.CONSENT_TTL_DAYS = 30
    settings.CONSENT_EXPIRY_NOTICE_DAYS = 14
    try:
        yield inbox
    finally:
        controller.stop()


def _by_recipient(messages: list[Message]) -> dict[str, list[Message]]:
    found: dict[str, list[Message]] = {}
    for message in messages:
        found.setdefault(str(message["To"]), []).append(message)
    return found


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(message.get_content_charset() or "utf-8")


def _subject(message: Message) -> str:
    return " ".join(str(message["Subject"]).split())  # unfolded, as a mail client shows it


def _links(message: Message) -> list[str]:
    return re.findall(re.escape(SITE) + r"(/\S*)", _body(message))


def _assert_only_own_name(message: Message, user: User) -> None:
    body = _body(message)
    assert f"Hello {user.username}," in body
    assert user.email not in body
    assert str(DataSubject.objects.get_or_create(user=user)[0].pseudonym) not in body


def test_the_right_messages_once_each_with_working_links(smtp: Inbox) -> None:
    # given: Ann's pod holds the request's data; Ben declines special-category data by rule;
    # Cem has no pod but a "notify me" rule; Dee's pod holds it but new-request e-mails are off
    ann, ben, cem, dee = (UserFactory(username=n) for n in ("ann", "ben", "cem", "dee"))
    PodFactory(owner=ann)
    PodFactory(owner=ben)
    PodFactory(owner=dee)
    ConsentRule.objects.create(user=ben, special_category=True, action="decline")
    ConsentRule.objects.create(user=cem, action="notify")
    NotificationPreference.objects.create(user=dee, new_request=False)
    model_request = open_request()

    # when the scheduler runs (twice)
    notifications_tick()
    notifications_tick()

    # then Ann and Cem get one e-mail each; Ben's rule declined it; Dee has it in her inbox only
    mails = _by_recipient(smtp.take())
    assert sorted(mails) == ["ann@example.org", "cem@example.org"]
    assert all(len(m) == 1 for m in mails.values())
    message = mails["ann@example.org"][0]
    assert _subject(message) == f"A new request may interest you: “{model_request.title}”"
    _assert_only_own_name(message, ann)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    request_link, unsubscribe_link, settings_link = _links(message)
    assert request_link == f"/requests/{model_request.pk}/"
    assert Notification.objects.get(user=dee).email_state == "skipped"
    assert not Notification.objects.filter(user=ben).exists()
    assert services.consent_refuse  # Ben's refusal came from his rule
    assert ben.consents.get().events.get().method == "rule"

    # the links work: the request page (signed in) and one-click unsubscribe (signed out)
    client = Client()
    client.force_login(ann)
    assert client.get(request_link).status_code == 200
    assert client.get(settings_link).status_code == 200
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.get(unsubscribe_link).status_code == 200
    assert anonymous.post(unsubscribe_link).status_code == 200
    assert NotificationPreference.objects.get(user=ann).new_request is False
    assert anonymous.get(unsubscribe_link[:-3] + "xx/").status_code == 404

    # Ann agrees, 20 days pass: her consent expires in 10 days → one expiry e-mail, renew link
    then = timezone.now() - timedelta(days=20)
    consent = services.consent_grant(user=ann, model_request=model_request, now=then)
    notifications_tick()
    notifications_tick()
    mails = _by_recipient(smtp.take())
    assert list(mails) == ["ann@example.org"] and len(mails["ann@example.org"]) == 1
    expiring = mails["ann@example.org"][0]
    assert _subject(expiring).startswith(f"Your consent to “{model_request.title}” expires on")
    _assert_only_own_name(expiring, ann)
    renew_link = _links(expiring)[0]
    assert renew_link == f"/consents/{consent.pk}/renew/"
    page = client.get(renew_link)
    assert page.status_code == 200 and b"Renew" in page.content
    notice = services.notice_current(model_request)
    assert client.post(renew_link, {"notice_hash": notice.content_hash}).status_code == 302
    consent.refresh_from_db()
    assert consent.events.order_by("-seq").first().event_type == "renewed"  # type: ignore[union-attr]
    notifications_tick()
    assert smtp.take() == []  # renewed: no longer expiring

    # Ann withdraws: one confirmation
    services.consent_withdraw(user=ann, consent=consent)
    notifications_tick()
    notifications_tick()
    mails = _by_recipient(smtp.take())
    assert list(mails) == ["ann@example.org"] and len(mails["ann@example.org"]) == 1
    assert _subject(mails["ann@example.org"][0]) == (
        f"Your withdrawal from “{model_request.title}” is confirmed"
    )
    assert client.get(_links(mails["ann@example.org"][0])[0]).status_code == 200

    # Cem agrees; the request completes: one e-mail to Cem linking to the request's page
    services.consent_grant(user=cem, model_request=model_request)
    ModelRequest.objects.filter(pk=model_request.pk).update(
        status=ModelRequest.Status.COMPLETED, finished_at=timezone.now()
    )
    notifications_tick()
    notifications_tick()
    mails = _by_recipient(smtp.take())
    assert list(mails) == ["cem@example.org"] and len(mails["cem@example.org"]) == 1
    done = mails["cem@example.org"][0]
    assert _subject(done) == f"“{model_request.title}” is completed"
    cem_client = Client()
    cem_client.force_login(cem)
    assert cem_client.get(_links(done)[0]).status_code == 200

    # the portal inbox shows the same messages
    inbox = cem_client.get("/inbox/")
    assert inbox.status_code == 200
    assert f"“{model_request.title}” is completed".encode() in inbox.content


def test_a_claimed_message_is_never_sent_again(smtp: Inbox) -> None:
    user = UserFactory()
    note = Notification.objects.create(
        user=user, kind="withdrawn", subject="x", params={"title": "T"}, link="/consents/"
    )
    Notification.objects.filter(pk=note.pk).update(email_state="sending")  # a sender died here
    assert notifications_send() == 0
    assert smtp.take() == []
    Notification.objects.filter(pk=note.pk).update(email_state="pending")
    assert notifications_send() == 1
    assert notifications_send() == 0
    assert len(smtp.take()) == 1


def test_an_unreachable_mail_server_leaves_messages_pending(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nobody listens
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    user = UserFactory()
    Notification.objects.create(
        user=user, kind="withdrawn", subject="y", params={"title": "T"}, link="/consents/"
    )
    with pytest.raises(ConnectionRefusedError):
        notifications_send()  # the connection fails before any message is claimed
    assert Notification.objects.get(user=user).email_state == "pending"


def test_beat_schedules_the_notifications_tick_that_workers_run() -> None:
    from celery.app.utils import find_app

    from consent import tasks

    app = find_app("dataspace")
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "consent.tasks.notifications_tick" in scheduled
    assert tasks.notifications_tick.name == "consent.tasks.notifications_tick"
    app.loader.import_default_modules()
    assert "consent.tasks.notifications_tick" in app.tasks


@pytest.mark.django_db(transaction=True)
def test_the_in_process_scheduler_sends_from_its_own_thread(smtp: Inbox, settings: Any) -> None:
    from consent import scheduler

    settings.NOTIFICATIONS_IN_PROCESS = True
    settings.NOTIFICATIONS_TICK_SECONDS = 0.2
    user = UserFactory()
    Notification.objects.create(
        user=user, kind="withdrawn", subject="z", params={"title": "T"}, link="/consents/"
    )
    assert scheduler.start_in_process()
    try:
        deadline = timezone.now() + timedelta(seconds=60)
        while (
            timezone.now() < deadline
            and not Notification.objects.filter(user=user, email_state="sent").exists()
        ):
            threading.Event().wait(0.1)
    finally:
        scheduler.stop_in_process()
    assert Notification.objects.get(user=user).email_state == "sent"
    assert [str(m["To"]) for m in smtp.take()] == [user.email]


def test_each_email_is_in_its_readers_own_language(smtp: Inbox) -> None:
    # given: Zoé reads the portal in French, Udo in German, Ann set nothing
    zoe, udo, ann = (UserFactory(username=n) for n in ("zoe", "udo", "ann"))
    DataSubject.objects.create(user=zoe, language="fr")
    DataSubject.objects.create(user=udo, language="de")
    for user in (zoe, udo, ann):
        Notification.objects.create(
            user=user, kind="withdrawn", subject="w", params={"title": "T"}, link="/consents/"
        )

    # when the pending messages are sent
    assert notifications_send() == 3

    # then each e-mail is in its reader's language, the others' in English
    mails = {to: m[0] for to, m in _by_recipient(smtp.take()).items()}
    zoe_mail, udo_mail = mails["zoe@example.org"], mails["udo@example.org"]
    # (_subject unfolds whitespace, the French no-break spaces included)
    assert _subject(zoe_mail) == "Votre retrait de « T » est confirmé"
    assert "Bonjour zoe," in _body(zoe_mail)
    assert "Arrêter ces e-mails en un clic" in _body(zoe_mail)
    assert _subject(udo_mail) == "Ihr Widerruf der Einwilligung zu „T“ ist bestätigt"
    assert "Hallo udo," in _body(udo_mail)
    assert _subject(mails["ann@example.org"]) == "Your withdrawal from “T” is confirmed"
    _assert_only_own_name(mails["ann@example.org"], ann)
