"""Consent services: every write to the consent domain goes through these functions.

Each runs in one transaction, locks the consent row before appending to its log (so a chain
never forks), and sends its signals only after commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from dataspace.errors import Conflict, DomainError, NotFound
from pods.agent.protocol import plan_hash
from pods.models import Pod
from training.models import ModelRequest

from .chain import event_digest
from .models import GENESIS_HASH, Consent, ConsentEvent, DataSubject, PrivacyNotice
from .notices import notice_hash, notice_languages, notice_sections, notice_text
from .signals import consent_withdrawn, training_pause_changed

Method = ConsentEvent.Method


def data_subject_for(user: User) -> DataSubject:
    subject, _created = DataSubject.objects.get_or_create(user=user)
    return subject


def actor_for(user: User) -> str:
    return f"user:{data_subject_for(user).pseudonym}"


@transaction.atomic
def notice_publish(*, model_request: ModelRequest, language: str = "en") -> PrivacyNotice:
    """Render the request's notice in ``language`` and store it as a new version (unless
    unchanged)."""
    sections = notice_sections(model_request, language)
    content_hash = notice_hash(sections, language)
    latest = (
        PrivacyNotice.objects.select_for_update()
        .filter(model_request=model_request, language=language)
        .order_by("-version")
        .first()
    )
    if latest is not None and latest.content_hash == content_hash:
        return latest
    return PrivacyNotice.objects.create(
        model_request=model_request,
        version=(latest.version + 1) if latest else 1,
        language=language,
        sections=sections,
        text=notice_text(sections),
        content_hash=content_hash,
    )


def notice_current(model_request: ModelRequest, language: str = "en") -> PrivacyNotice:
    """The request's current notice in ``language``.

    The notice in the default language is rendered when the request opens (its hash is in the
    request's plan hash); another language's is rendered the first time someone reads the
    request in it, and then kept like any notice version.
    """
    notice = (
        PrivacyNotice.objects.filter(model_request=model_request, language=language)
        .order_by("-version")
        .first()
    )
    if notice is not None:
        return notice
    if language == settings.LANGUAGE_CODE or language not in notice_languages():
        raise DomainError(_("This request has no privacy notice yet."), code="no_notice")
    notice_current(model_request, settings.LANGUAGE_CODE)  # never before the request opened
    try:
        with transaction.atomic():
            return notice_publish(model_request=model_request, language=language)
    except IntegrityError:  # another reader rendered it first: theirs is the same notice
        return PrivacyNotice.objects.filter(model_request=model_request, language=language).latest(
            "version"
        )


def notice_plan_hash(model_request: ModelRequest, notice: PrivacyNotice) -> str:
    """The plan a person agrees to by reading ``notice``: spec, initial weights and that
    notice's hash (:func:`pods.agent.protocol.plan_hash`), so their pod recomputes it from the
    receipt whatever language they read. With the default-language notice it is the
    request's own ``plan_hash``."""
    return plan_hash(model_request.spec, model_request.weights_sha256, notice.content_hash)


def append_event(
    consent: Consent,
    *,
    event_type: str,
    at: datetime,
    actor: str,
    method: str,
    detail: dict[str, Any] | None = None,
) -> ConsentEvent:
    """Append to a consent's chain. The caller holds the consent row lock."""
    last = consent.events.order_by("-seq").only("seq", "hash").first()
    seq = 1 if last is None else last.seq + 1
    prev_hash = GENESIS_HASH if last is None else last.hash
    detail = detail or {}
    digest = event_digest(
        consent_id=str(consent.id),
        seq=seq,
        event_type=event_type,
        at=at,
        actor=actor,
        method=method,
        notice_hash=consent.notice_hash,
        detail=detail,
        prev_hash=prev_hash,
    )
    return ConsentEvent.objects.create(
        consent=consent,
        seq=seq,
        event_type=event_type,
        at=at,
        actor=actor,
        method=method,
        notice_hash=consent.notice_hash,
        detail=detail,
        prev_hash=prev_hash,
        hash=digest,
    )


def require_open(model_request: ModelRequest) -> None:
    if not model_request.is_open:
        raise DomainError(
            _("This request is %(status)s; it no longer takes decisions.")
            % {"status": model_request.get_status_display().lower()},
            code="request_not_open",
            status_code=409,
        )


def _locked_consent(user: User, model_request: ModelRequest) -> Consent | None:
    return (
        Consent.objects.select_for_update().filter(user=user, model_request=model_request).first()
    )


def _usable_pod(user: User, pod: Pod | None) -> Pod | None:
    if pod is None:
        return None
    if pod.owner_id != user.pk:
        raise NotFound(_("No such pod."), code="pod_not_found")
    if not pod.is_active:
        raise DomainError(_("This pod is revoked and cannot take part."), code="pod_revoked")
    return pod


def check_seen(notice: PrivacyNotice, seen_notice_hash: str | None) -> None:
    if seen_notice_hash is not None and seen_notice_hash != notice.content_hash:
        raise Conflict(
            _("The notice changed since you opened it. Please read the current version."),
            code="notice_changed",
        )


def decided_on(consent: Consent, notice: PrivacyNotice, status: str, now: datetime) -> None:
    """The person decided on ``notice`` at ``now``: the consent takes that status, notice, its
    hash and the plan hash a pod checks (not saved)."""
    consent.status = status
    consent.notice = notice
    consent.notice_hash = notice.content_hash
    consent.plan_hash = notice_plan_hash(consent.model_request, notice)
    consent.decided_at = now


def _decide(
    *,
    user: User,
    model_request: ModelRequest,
    status: str,
    notice: PrivacyNotice,
    now: datetime,
    pod: Pod | None,
) -> Consent:
    """Create the consent row, or lock an existing one, racing safely on the unique pair."""
    consent = _locked_consent(user, model_request)
    if consent is not None:
        return consent
    try:
        with transaction.atomic():
            return Consent.objects.create(
                user=user,
                model_request=model_request,
                status=status,
                notice=notice,
                notice_hash=notice.content_hash,
                plan_hash=notice_plan_hash(model_request, notice),
                pod=pod,
                decided_at=now,
                given_at=now if status == Consent.Status.GIVEN else None,
                expires_at=now + timedelta(days=settings.CONSENT_TTL_DAYS)
                if status == Consent.Status.GIVEN
                else None,
            )
    except IntegrityError:
        locked = _locked_consent(user, model_request)
        if locked is None:  # pragma: no cover - the conflicting row must exist
            raise
        return locked


@transaction.atomic
def consent_grant(
    *,
    user: User,
    model_request: ModelRequest,
    pod: Pod | None = None,
    seen_notice_hash: str | None = None,
    language: str = "en",
    method: str = Method.PORTAL,
    now: datetime | None = None,
) -> Consent:
    """Give consent to the request's current notice in ``language`` (the one the person read).
    Granting again is idempotent."""
    if method == Method.RULE:
        # Consent is the person's own act; a standing rule may decline, never agree.
        raise DomainError(_("A standing rule cannot give consent."), code="rule_cannot_agree")
    now = now or timezone.now()
    require_open(model_request)
    notice = notice_current(model_request, language)
    check_seen(notice, seen_notice_hash)
    pod = _usable_pod(user, pod)
    actor = actor_for(user)
    consent = _decide(
        user=user,
        model_request=model_request,
        status=Consent.Status.GIVEN,
        notice=notice,
        now=now,
        pod=pod,
    )
    if consent.events.exists():
        still_given = (
            consent.status == Consent.Status.GIVEN
            and consent.notice_hash == notice.content_hash
            and consent.expires_at is not None
            and consent.expires_at > now
        )
        if still_given:
            if pod is not None and consent.pod_id != pod.pk:
                consent.pod = pod
                consent.save(update_fields=["pod", "updated_at"])
                append_event(
                    consent,
                    event_type=ConsentEvent.Type.POD_ASSIGNED,
                    at=now,
                    actor=actor,
                    method=method,
                    detail={"pod": pod.fingerprint},
                )
            return consent
        decided_on(consent, notice, Consent.Status.GIVEN, now)
        consent.given_at = now
        consent.withdrawn_at = None
        consent.expires_at = now + timedelta(days=settings.CONSENT_TTL_DAYS)
        if pod is not None:
            consent.pod = pod
        consent.save()
    detail = {"pod": pod.fingerprint} if pod is not None else {}
    append_event(
        consent,
        event_type=ConsentEvent.Type.GIVEN,
        at=now,
        actor=actor,
        method=method,
        detail=detail,
    )
    return consent


@transaction.atomic
def consent_refuse(
    *,
    user: User,
    model_request: ModelRequest,
    seen_notice_hash: str | None = None,
    language: str = "en",
    method: str = Method.PORTAL,
    now: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> Consent:
    """Decline a request (having read its notice in ``language``). Declining again is
    idempotent; a given consent is withdrawn instead."""
    now = now or timezone.now()
    require_open(model_request)
    notice = notice_current(model_request, language)
    check_seen(notice, seen_notice_hash)
    consent = _decide(
        user=user,
        model_request=model_request,
        status=Consent.Status.REFUSED,
        notice=notice,
        now=now,
        pod=None,
    )
    if consent.events.exists():
        if consent.status == Consent.Status.REFUSED:
            return consent
        if consent.status == Consent.Status.GIVEN:
            raise Conflict(
                _("You agreed to this request. To stop taking part, withdraw your consent."),
                code="consent_given",
            )
        decided_on(consent, notice, Consent.Status.REFUSED, now)
        consent.save()
    append_event(
        consent,
        event_type=ConsentEvent.Type.REFUSED,
        at=now,
        actor=actor_for(user),
        method=method,
        detail=detail,
    )
    return consent


@transaction.atomic
def consent_withdraw(
    *,
    user: User,
    consent: Consent,
    method: str = Method.PORTAL,
    now: datetime | None = None,
) -> Consent:
    """Withdraw a given consent: the pod takes part in no further round (DESIGN.md §4.3)."""
    now = now or timezone.now()
    locked = Consent.objects.select_for_update().filter(pk=consent.pk, user=user).first()
    if locked is None:
        raise NotFound(_("No such consent."), code="consent_not_found")
    if locked.status == Consent.Status.WITHDRAWN:
        assert locked.withdrawn_at is not None
        raise Conflict(
            _("You already withdrew this consent on %(date)s UTC.")
            % {"date": date_format(locked.withdrawn_at, "j F Y, H:i")},
            code="already_withdrawn",
        )
    if locked.status != Consent.Status.GIVEN:
        raise Conflict(
            _("This consent is %(status)s; there is nothing to withdraw.")
            % {"status": locked.get_status_display().lower()},
            code="not_given",
        )
    locked.status = Consent.Status.WITHDRAWN
    locked.withdrawn_at = locked.decided_at = now
    locked.save()
    append_event(
        locked,
        event_type=ConsentEvent.Type.WITHDRAWN,
        at=now,
        actor=actor_for(user),
        method=method,
    )
    transaction.on_commit(lambda: consent_withdrawn.send(sender=Consent, consent=locked))
    return locked


@transaction.atomic
def consent_expire_due(*, now: datetime | None = None) -> int:
    """Mark given consents whose time ran out as expired. Returns how many."""
    now = now or timezone.now()
    due = (
        Consent.objects.select_for_update()
        .filter(status=Consent.Status.GIVEN, expires_at__lte=now)
        .order_by("pk")
    )
    count = 0
    for consent in due:
        consent.status = Consent.Status.EXPIRED
        consent.decided_at = now
        consent.save()
        append_event(
            consent,
            event_type=ConsentEvent.Type.EXPIRED,
            at=now,
            actor="system",
            method=Method.SYSTEM,
        )
        count += 1
    return count


@transaction.atomic
def training_pause_set(*, user: User, paused: bool, now: datetime | None = None) -> DataSubject:
    """Pause or resume all training for a person: paused pods are dropped from rounds at once."""
    subject = DataSubject.objects.select_for_update().get(pk=data_subject_for(user).pk)
    if subject.training_paused != paused:
        subject.training_paused = paused
        subject.paused_changed_at = now or timezone.now()
        subject.save(update_fields=["training_paused", "paused_changed_at"])
        transaction.on_commit(
            lambda: training_pause_changed.send(sender=DataSubject, user=user, paused=paused)
        )
    return subject
