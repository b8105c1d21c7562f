"""Notifications on the production topology: a Celery worker with beat on PostgreSQL + Redis
runs consent.tasks.notifications_tick and e-mails through a real SMTP server on loopback —
once, however many ticks run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consent.models import ConsentRule, Notification
from dataspace.processes import stop
from tests.factories import PodFactory, ProviderFactory, UserFactory, open_request
from tests.live import ROOT, on_test_database, wait_for
from tests.smtp import smtp_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_beat_declines_by_rule_and_emails_once(tmp_path: Path) -> None:
    inbox, controller = smtp_server()
    acme = ProviderFactory(name="Acme Health")
    reader, decliner = UserFactory(username="reader"), UserFactory(username="decliner")
    PodFactory(owner=reader)
    PodFactory(owner=decliner)
    model_request = open_request(provider=acme)
    # A rule written after the request started recruiting: the scheduler applies it.
    ConsentRule.objects.create(user=decliner, provider=acme, action="decline")

    env = on_test_database(tmp_path, ROUNDS_TICK_IN_PROCESS="0").env
    env.update(
        NOTIFICATIONS_TICK_SECONDS="1",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(controller.port),
        EMAIL_USE_TLS="0",
        EMAIL_USE_SSL="0",
        SITE_URL="http://portal.test",
    )
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "dataspace", "worker", "--beat"),
            *("--schedule", str(tmp_path / "beat-schedule"), "--concurrency", "1"),
            *("--loglevel", "info", "--without-gossip", "--without-mingle"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    ticks = "consent.tasks.notifications_tick["
    try:
        wait_for(lambda: inbox.messages, 120, "the new-request e-mail")
        seen = log.read_text(errors="replace").count(ticks)
        # three more ticks (each logged when received and when it succeeded)
        wait_for(lambda: log.read_text(errors="replace").count(ticks) >= seen + 6, 120, "ticks")
    finally:
        stop(worker)
        controller.stop()
    messages = inbox.take()
    assert [str(m["To"]) for m in messages] == ["reader@example.org"], log.read_text()
    assert model_request.title in " ".join(str(messages[0]["Subject"]).split())
    assert Notification.objects.get(user=reader).email_state == "sent"
    refusal = decliner.consents.get(model_request=model_request)
    assert refusal.status == "refused" and refusal.events.get().method == "rule"
    assert not Notification.objects.filter(user=decliner).exists()
