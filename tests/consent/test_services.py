"""Consent services and selectors on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from consent import services
from consent.models import AppendOnlyError, Consent, ConsentEvent
from consent.selectors import (
    consent_active,
    consent_log_verify,
    consent_usable,
    requests_awaiting_decision,
)
from dataspace.errors import DomainError
from tests.factories import PodFactory, UserFactory, open_request
from training.models import ModelRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_request() -> ModelRequest:
    return open_request()


def test_grant_records_consent_event_and_notice_hash(model_request: ModelRequest) -> None:
    # given a person with a pod holding the category
    user = UserFactory()
    pod = PodFactory(owner=user)
    notice = services.notice_current(model_request)

    # when they agree having seen the current notice
    consent = services.consent_grant(
        user=user, model_request=model_request, pod=pod, seen_notice_hash=notice.content_hash
    )

    # then the consent is given, bound to that notice, plan and pod, with one chained event
    assert consent.status == Consent.Status.GIVEN
    assert consent.notice_hash == notice.content_hash
    assert consent.plan_hash == model_request.plan_hash
    assert consent.pod == pod
    assert consent.expires_at is not None and consent.expires_at > timezone.now()
    events = list(consent.events.order_by("seq"))
    assert [e.event_type for e in events] == ["given"]
    assert events[0].prev_hash == "0" * 64
    assert events[0].actor.startswith("user:")
    assert consent_active(user=user, model_request=model_request)
    assert consent_log_verify() == []


def test_replayed_grant_is_idempotent(model_request: ModelRequest) -> None:
    user = UserFactory()
    first = services.consent_grant(user=user, model_request=model_request)
    again = services.consent_grant(user=user, model_request=model_request)
    assert again.pk == first.pk
    assert Consent.objects.count() == 1
    assert ConsentEvent.objects.count() == 1


def test_withdraw_then_withdraw_again_is_a_clear_error(model_request: ModelRequest) -> None:
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=model_request)
    services.consent_withdraw(user=user, consent=consent)
    assert not consent_active(user=user, model_request=model_request)

    with pytest.raises(DomainError) as excinfo:
        services.consent_withdraw(user=user, consent=consent)

    assert excinfo.value.code == "already_withdrawn"
    assert "already withdrew" in excinfo.value.message
    assert ConsentEvent.objects.filter(consent=consent).count() == 2


def test_withdrawal_sends_signal_after_commit(
    model_request: ModelRequest, django_capture_on_commit_callbacks: object
) -> None:
    from consent.signals import consent_withdrawn

    received: list[Consent] = []

    def listener(sender: object, consent: Consent, **kwargs: object) -> None:
        received.append(consent)

    consent_withdrawn.connect(listener)
    try:
        user = UserFactory()
        consent = services.consent_grant(user=user, model_request=model_request)
        with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
            services.consent_withdraw(user=user, consent=consent)
    finally:
        consent_withdrawn.disconnect(listener)
    assert [c.pk for c in received] == [consent.pk]


def test_refuse_then_agree_then_refuse_is_refused_with_advice(model_request: ModelRequest) -> None:
    user = UserFactory()
    services.consent_refuse(user=user, model_request=model_request)
    services.consent_refuse(user=user, model_request=model_request)  # idempotent
    consent = services.consent_grant(user=user, model_request=model_request)
    assert consent.status == Consent.Status.GIVEN

    with pytest.raises(DomainError) as excinfo:
        services.consent_refuse(user=user, model_request=model_request)

    assert excinfo.value.code == "consent_given"
    assert [e.event_type for e in consent.events.order_by("seq")] == ["refused", "given"]


def test_grant_with_stale_notice_hash_writes_nothing(model_request: ModelRequest) -> None:
    user = UserFactory()
    with pytest.raises(DomainError) as excinfo:
        services.consent_grant(user=user, model_request=model_request, seen_notice_hash="f" * 64)
    assert excinfo.value.code == "notice_changed"
    assert Consent.objects.count() == 0
    assert ConsentEvent.objects.count() == 0


def test_grant_with_someone_elses_pod_is_refused(model_request: ModelRequest) -> None:
    user = UserFactory()
    other_pod = PodFactory()
    with pytest.raises(DomainError) as excinfo:
        services.consent_grant(user=user, model_request=model_request, pod=other_pod)
    assert excinfo.value.code == "pod_not_found"
    assert Consent.objects.count() == 0


def test_grant_on_cancelled_request_is_refused(model_request: ModelRequest) -> None:
    from training.services import model_request_cancel

    model_request_cancel(model_request=model_request)
    model_request.refresh_from_db()
    with pytest.raises(DomainError) as excinfo:
        services.consent_grant(user=UserFactory(), model_request=model_request)
    assert excinfo.value.code == "request_not_open"
    assert Consent.objects.count() == 0


def test_expiry_marks_consent_expired(model_request: ModelRequest) -> None:
    user = UserFactory()
    start = timezone.now()
    services.consent_grant(user=user, model_request=model_request, now=start)
    later = start + timedelta(days=366)
    assert consent_active(user=user, model_request=model_request, at=start + timedelta(days=1))
    assert not consent_active(user=user, model_request=model_request, at=later)

    assert services.consent_expire_due(now=later) == 1

    consent = Consent.objects.get()
    assert consent.status == Consent.Status.EXPIRED
    assert [e.event_type for e in consent.events.order_by("seq")] == ["given", "expired"]
    assert consent_log_verify() == []


def test_pause_makes_consent_unusable_but_keeps_it(model_request: ModelRequest) -> None:
    user = UserFactory()
    services.consent_grant(user=user, model_request=model_request)
    services.training_pause_set(user=user, paused=True)
    assert consent_active(user=user, model_request=model_request)
    assert not consent_usable(user=user, model_request=model_request)
    services.training_pause_set(user=user, paused=False)
    assert consent_usable(user=user, model_request=model_request)


def test_awaiting_lists_only_undecided_requests_for_held_categories(
    model_request: ModelRequest,
) -> None:
    holder = UserFactory()
    PodFactory(owner=holder)
    stranger = UserFactory()
    PodFactory(owner=stranger, categories_held=[{"slug": "handwriting.digits", "count": 3}])
    assert requests_awaiting_decision(holder) == [model_request]
    assert requests_awaiting_decision(stranger) == []
    services.consent_refuse(user=holder, model_request=model_request)
    assert requests_awaiting_decision(holder) == []


def test_events_cannot_be_updated_or_deleted_through_the_orm(model_request: ModelRequest) -> None:
    consent = services.consent_grant(user=UserFactory(), model_request=model_request)
    event = consent.events.get()
    event.method = "api"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        ConsentEvent.objects.filter(pk=event.pk).update(method="api")
    with pytest.raises(AppendOnlyError):
        ConsentEvent.objects.filter(pk=event.pk).delete()
    assert ConsentEvent.objects.get(pk=event.pk).method == "portal"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL")
def test_database_trigger_refuses_raw_update_and_delete(model_request: ModelRequest) -> None:
    from django.db import DatabaseError, transaction

    consent = services.consent_grant(user=UserFactory(), model_request=model_request)
    event = consent.events.get()
    for sql in (
        "UPDATE consent_consentevent SET method = 'api' WHERE id = %s",
        "DELETE FROM consent_consentevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [event.pk])
    assert ConsentEvent.objects.get(pk=event.pk).method == "portal"
