"""Tampering with the consent log is detected by ``verify_consent_log``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from consent import services
from consent.models import Consent
from tests.factories import UserFactory, open_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain() -> Consent:
    model_request = open_request()
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=model_request)
    services.consent_withdraw(user=user, consent=consent)
    services.consent_grant(user=user, model_request=model_request)
    return consent


@pytest.fixture
def raw_sql() -> None:
    """Lift the append-only trigger in this test's transaction, as an attacker with SQL could."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE consent_consentevent DISABLE TRIGGER consent_event_append_only"
            )


def run_verify() -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_consent_log", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_intact_log_verifies(chain: Consent) -> None:
    code, out, err = run_verify()
    assert code == 0
    assert "intact: 1 chains verified" in out
    assert err == ""


@pytest.mark.usefixtures("raw_sql")
def test_edited_event_is_detected(chain: Consent) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE consent_consentevent SET method = 'api' WHERE consent_id = %s AND seq = 2",
            [chain.pk.hex if connection.vendor == "sqlite" else chain.pk],
        )
    code, _, err = run_verify()
    assert code == 1
    assert "event #2: content does not match its hash" in err


@pytest.mark.usefixtures("raw_sql")
def test_removed_event_is_detected(chain: Consent) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM consent_consentevent WHERE consent_id = %s AND seq = 2",
            [chain.pk.hex if connection.vendor == "sqlite" else chain.pk],
        )
    code, _, err = run_verify()
    assert code == 1
    assert "expected event #2" in err
    assert "link to the previous event broken" in err


@pytest.mark.usefixtures("raw_sql")
def test_rewritten_status_is_detected(chain: Consent) -> None:
    Consent.objects.filter(pk=chain.pk).update(status="withdrawn", withdrawn_at=chain.decided_at)
    code, _, err = run_verify()
    assert code == 1
    assert "disagrees with the log" in err
