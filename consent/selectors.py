"""Consent reads. Every selector that takes a user is scoped to that user."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.http import Http404
from django.utils import timezone

from pods.models import Pod
from training.models import ModelRequest

from .chain import ChainBreak, verify_chain
from .models import Consent, ConsentEvent, DataSubject


def consent_active(*, user: User, model_request: ModelRequest, at: datetime | None = None) -> bool:
    """Whether the person's consent to the request is given and not expired at ``at``."""
    at = at or timezone.now()
    return Consent.objects.filter(
        user=user,
        model_request=model_request,
        status=Consent.Status.GIVEN,
        expires_at__gt=at,
    ).exists()


def consent_usable(*, user: User, model_request: ModelRequest, at: datetime | None = None) -> bool:
    """Active consent and training not paused: the pod may take part in a round now."""
    paused = DataSubject.objects.filter(user=user, training_paused=True).exists()
    return not paused and consent_active(user=user, model_request=model_request, at=at)


def consents_of(user: User) -> QuerySet[Consent]:
    return (
        Consent.objects.filter(user=user)
        .select_related("model_request__provider", "model_request__data_category", "notice", "pod")
        .prefetch_related(Prefetch("events", queryset=ConsentEvent.objects.order_by("seq")))
        .order_by("-decided_at")
    )


def consent_of(user: User, consent_id: uuid.UUID | str) -> Consent:
    """The user's consent, or 404: another person's consent does not exist for them."""
    try:
        return consents_of(user).get(pk=consent_id)
    except (Consent.DoesNotExist, ValueError, TypeError):
        raise Http404("No such consent.") from None


def open_requests() -> QuerySet[ModelRequest]:
    return ModelRequest.objects.filter(status__in=ModelRequest.OPEN_STATUSES).select_related(
        "provider", "data_category"
    )


def open_request(request_id: uuid.UUID | str) -> ModelRequest:
    try:
        return ModelRequest.objects.select_related("provider", "data_category").get(
            pk=request_id, status__in=(*ModelRequest.OPEN_STATUSES, ModelRequest.Status.COMPLETED)
        )
    except (ModelRequest.DoesNotExist, ValueError, TypeError):
        raise Http404("No such request.") from None


def held_category_slugs(user: User) -> set[str]:
    slugs: set[str] = set()
    for pod in Pod.objects.filter(owner=user, status=Pod.Status.ACTIVE):
        slugs.update(
            c["slug"] for c in pod.categories_held or [] if isinstance(c, dict) and "slug" in c
        )
    return slugs


def requests_undecided(user: User) -> QuerySet[ModelRequest]:
    decided = Consent.objects.filter(user=user, model_request=OuterRef("pk"))
    return open_requests().filter(~Exists(decided)).order_by("-recruiting_at")


def requests_awaiting_decision(user: User) -> list[ModelRequest]:
    """Open requests the person has not decided on and whose data their pods hold."""
    held = held_category_slugs(user)
    return [r for r in requests_undecided(user) if r.data_category.slug in held]


def active_pods(user: User) -> QuerySet[Pod]:
    return Pod.objects.filter(owner=user, status=Pod.Status.ACTIVE).order_by("name")


def training_paused(user: User) -> bool:
    return DataSubject.objects.filter(user=user, training_paused=True).exists()


def consent_log_verify() -> list[ChainBreak]:
    """Walk every consent's event chain; return every break found (empty when intact)."""
    breaks: list[ChainBreak] = []
    consents = Consent.objects.order_by("pk").only("pk", "status")
    for consent in consents.iterator(chunk_size=500):
        events = ConsentEvent.objects.filter(consent_id=consent.pk).order_by("seq", "pk")
        breaks.extend(verify_chain(str(consent.pk), consent.status, events))
    orphans = ConsentEvent.objects.exclude(consent_id__in=Consent.objects.values("pk"))
    breaks.extend(ChainBreak(str(e.consent_id), e.seq, "event without a consent") for e in orphans)
    return breaks
