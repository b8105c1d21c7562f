"""Renewing a consent before (or after) it expires: same consent, same pod, same history.

The renewal is one more event in the consent's hash-chained log (``renewed``) and the receipt,
issued afresh, shows it. When the request's notice changed since the person agreed, renewal
needs the hash of the current notice the person was shown (the renewal page shows it again).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from dataspace.errors import Conflict, NotFound

from .models import Consent, ConsentEvent
from .services import (
    Method,
    actor_for,
    append_event,
    check_seen,
    decided_on,
    notice_current,
    require_open,
)

RENEWABLE = (Consent.Status.GIVEN, Consent.Status.EXPIRED)


def consent_language(consent: Consent) -> str:
    """The language of the notice the person last agreed to."""
    return consent.notice.language


def notice_changed(consent: Consent) -> bool:
    """Whether the request's current notice, in the language the person read it in, differs
    from the one they agreed to."""
    current = notice_current(consent.model_request, consent_language(consent))
    return current.content_hash != consent.notice_hash


@transaction.atomic
def consent_renew(
    *,
    user: User,
    consent: Consent,
    seen_notice_hash: str | None = None,
    language: str | None = None,
    method: str = Method.PORTAL,
    now: datetime | None = None,
) -> Consent:
    """Extend a given (or expired) consent by ``CONSENT_TTL_DAYS`` from now, keeping its pod.
    ``language`` is the one the person reads the notice in now (by default the one they agreed
    in); a notice in another language counts as changed and must have been shown."""
    now = now or timezone.now()
    locked = (
        Consent.objects.select_for_update(of=("self",))
        .select_related("model_request", "pod", "notice")
        .filter(pk=consent.pk, user=user)
        .first()
    )
    if locked is None:
        raise NotFound(_("No such consent."), code="consent_not_found")
    if locked.status not in RENEWABLE:
        raise Conflict(
            _("Only a consent you gave can be renewed; this one is %(status)s.")
            % {"status": locked.get_status_display().lower()},
            code="not_renewable",
        )
    require_open(locked.model_request)
    notice = notice_current(locked.model_request, language or consent_language(locked))
    changed = notice.content_hash != locked.notice_hash
    if changed and seen_notice_hash is None:
        raise Conflict(
            _("The notice changed since you agreed. Please read the current version."),
            code="notice_changed",
        )
    check_seen(notice, seen_notice_hash)
    previous_expiry = locked.expires_at
    decided_on(locked, notice, Consent.Status.GIVEN, now)
    locked.given_at = locked.given_at or now
    locked.expires_at = now + timedelta(days=settings.CONSENT_TTL_DAYS)
    locked.save()
    detail = {
        "previous_expires_at": previous_expiry.isoformat() if previous_expiry else None,
        "expires_at": locked.expires_at.isoformat(),
        "notice_changed": changed,
    }
    if locked.pod is not None:
        detail["pod"] = locked.pod.fingerprint
    append_event(
        locked,
        event_type=ConsentEvent.Type.RENEWED,
        at=now,
        actor=actor_for(user),
        method=method,
        detail=detail,
    )
    return locked
