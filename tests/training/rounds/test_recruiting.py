"""The clock's tick reads which recruiting requests have enough usable consents in one query;
it must agree with the per-request test (``enough_consents``) whatever makes a consent unusable:
withdrawn, expired, or its person pausing all training."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import Consent
from consent.services import consent_grant, consent_withdraw, training_pause_set
from tests.factories import UserFactory, open_request
from training.models import ModelRequest
from training.rounds.cohort import enough_consents, recruiting_with_enough_consents

pytestmark = pytest.mark.django_db


def test_the_ticks_one_query_agrees_with_each_requests_count() -> None:
    now = timezone.now()
    p0, p1, p2, p3 = (UserFactory() for _ in range(4))
    short, enough, withdrawn, expired, paused, finished = (
        open_request(min_participants=2, cohort_size=3) for _ in range(6)
    )
    consent_grant(user=p0, model_request=short)
    for request in (enough, withdrawn, expired, finished):
        for person in (p0, p1):
            consent_grant(user=person, model_request=request)
    for person in (p0, p2, p3):
        consent_grant(user=person, model_request=paused)
    consent_withdraw(user=p1, consent=Consent.objects.get(user=p1, model_request=withdrawn))
    Consent.objects.filter(model_request=expired, user=p1).update(
        expires_at=now - timedelta(seconds=1)
    )
    training_pause_set(user=p2, paused=True)
    training_pause_set(user=p3, paused=True)
    ModelRequest.objects.filter(pk=finished.pk).update(status=ModelRequest.Status.COMPLETED)

    with CaptureQueriesContext(connection) as queries:
        ready = {r.pk for r in recruiting_with_enough_consents(now)}
    assert len(queries) == 1
    recruiting = ModelRequest.objects.filter(status=ModelRequest.Status.RECRUITING)
    assert ready == {r.pk for r in recruiting if enough_consents(r, now)} == {enough.pk}
    training_pause_set(user=p3, paused=False)  # paused: two usable consents again
    assert {r.pk for r in recruiting_with_enough_consents(now)} == {enough.pk, paused.pk}
