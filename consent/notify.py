"""Notifications: what each person is told, in the portal inbox and by e-mail.

Two steps, both idempotent, run by the scheduler (:mod:`consent.scheduler`):

1. :func:`notifications_produce` finds what deserves a message — a new open request on data the
   person's pods hold (unless a rule declined it; a "notify me" rule also for data they do not
   hold), a consent expiring within ``CONSENT_EXPIRY_NOTICE_DAYS``, a request they agreed to that
   completed, a withdrawal — and stores one :class:`~consent.models.Notification` per (person,
   kind, subject); the unique row makes a second run create nothing.
2. :func:`notifications_send` e-mails pending rows. Each row is claimed (``pending`` →
   ``sending``, a conditional update only one process can win) before its message is handed to
   the mail server, so a retried or doubled run never sends twice; a process killed after the
   claim leaves the row ``sending`` and the message unsent (at most once — the inbox has it).

Bodies carry no personal data beyond the person's own name: request titles, dates and links.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.mail import EmailMessage, get_connection
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from pods.models import Pod
from training.models import ModelRequest

from .models import (
    Consent,
    ConsentRule,
    DataSubject,
    Notification,
    NotificationPreference,
    RuleAction,
)
from .renewal import notice_changed
from .rules import rule_decision

logger = logging.getLogger(__name__)

Kind = Notification.Kind
State = Notification.EmailState
UNSUBSCRIBE_SALT = "consent.notifications.unsubscribe"


# -- texts (rendered when shown or sent, so they follow the reader's language) -------------------


def notification_title(n: Notification) -> str:
    p: dict[str, object] = n.params
    if n.kind == Kind.NEW_REQUEST:
        return _("A new request may interest you: “%(title)s”") % p
    if n.kind == Kind.EXPIRING:
        when = parse_datetime(str(p.get("expires_at")))
        day = date_format(when, "j F Y") if when else ""
        return _("Your consent to “%(title)s” expires on %(day)s") % {**p, "day": day}
    if n.kind == Kind.COMPLETED:
        return _("“%(title)s” is completed") % p
    return _("Your withdrawal from “%(title)s” is confirmed") % p


def notification_body(n: Notification) -> str:
    p: dict[str, object] = n.params
    if n.kind == Kind.NEW_REQUEST:
        return (
            _(
                "%(provider)s asks to train a model on “%(category)s” data. Nothing happens unless "
                "you agree. Read the notice and decide:"
            )
            % p
        )
    if n.kind == Kind.EXPIRING:
        text = _(
            "Renew it with one click to keep taking part with the same pod. If you do nothing, "
            "your pod stops taking part when it expires."
        )
        if p.get("notice_changed"):
            text += " " + _(
                "The notice changed since you agreed; the renewal page shows the current version."
            )
        return text
    if n.kind == Kind.COMPLETED:
        return _("Training finished. The request's page shows what was done:")
    return _(
        "Your pod takes part in no further round of this request. Models trained before stay "
        "with the provider. Your consents:"
    )


def notification_action(n: Notification) -> str:
    """The words of the message's link."""
    return {
        Kind.NEW_REQUEST: _("Read the notice and decide"),
        Kind.EXPIRING: _("Renew"),
        Kind.COMPLETED: _("See the request"),
        Kind.WITHDRAWN: _("My consents"),
    }[Kind(n.kind)]


# -- step 1: what deserves a message ------------------------------------------------------------


def _preferences(user_ids: Iterable[int]) -> dict[int, NotificationPreference]:
    return {p.user_id: p for p in NotificationPreference.objects.filter(user_id__in=set(user_ids))}


def _notify(
    user: User,
    kind: str,
    subject: str,
    params: dict[str, Any],
    link: str,
    prefs: dict[int, NotificationPreference],
) -> bool:
    pref = prefs.get(user.pk)
    wants_email = bool(user.email) and (pref is None or pref.emails(kind))
    _, created = Notification.objects.get_or_create(
        user=user,
        kind=kind,
        subject=subject,
        defaults={
            "params": params,
            "link": link,
            "email_state": State.PENDING if wants_email else State.SKIPPED,
        },
    )
    return created


def _held_by_user() -> dict[int, set[str]]:
    held: dict[int, set[str]] = {}
    for owner_id, categories in Pod.objects.filter(status=Pod.Status.ACTIVE).values_list(
        "owner_id", "categories_held"
    ):
        held.setdefault(owner_id, set()).update(
            c["slug"] for c in categories or [] if isinstance(c, dict) and "slug" in c
        )
    return held


def _new_requests(now: datetime) -> int:
    held = _held_by_user()
    rules: dict[int, list[ConsentRule]] = {}
    for rule in ConsentRule.objects.select_related("provider", "data_category"):
        rules.setdefault(rule.user_id, []).append(rule)
    notify_users = {
        uid for uid, rs in rules.items() if any(r.action == RuleAction.NOTIFY for r in rs)
    }
    created = 0
    open_requests = ModelRequest.objects.filter(
        status__in=ModelRequest.OPEN_STATUSES
    ).select_related("provider", "data_category")
    for model_request in open_requests:
        slug = model_request.data_category.slug
        candidates = {uid for uid, slugs in held.items() if slug in slugs} | notify_users
        candidates -= set(
            Consent.objects.filter(model_request=model_request).values_list("user_id", flat=True)
        )
        if not candidates:
            continue
        params = {
            "title": model_request.title,
            "provider": model_request.provider.name,
            "category": model_request.data_category.title,
        }
        link = reverse("portal:request", args=[model_request.pk])
        prefs = _preferences(candidates)
        for user in User.objects.filter(pk__in=candidates, is_active=True):
            action, _rule = rule_decision(rules.get(user.pk, []), model_request)
            holds = slug in held.get(user.pk, set())
            if action == RuleAction.DECLINE or not (holds or action == RuleAction.NOTIFY):
                continue
            created += _notify(user, Kind.NEW_REQUEST, str(model_request.pk), params, link, prefs)
    return created


def _expiring(now: datetime) -> int:
    horizon = now + timedelta(days=settings.CONSENT_EXPIRY_NOTICE_DAYS)
    due = Consent.objects.filter(
        status=Consent.Status.GIVEN, expires_at__gt=now, expires_at__lte=horizon
    ).select_related("user", "model_request", "notice")
    prefs = _preferences(c.user_id for c in due)
    created = 0
    for consent in due:
        assert consent.expires_at is not None
        params = {
            "title": consent.model_request.title,
            "expires_at": consent.expires_at.isoformat(),
            "notice_changed": notice_changed(consent),
        }
        subject = f"{consent.pk}:{int(consent.expires_at.timestamp())}"
        link = reverse("portal:renew", args=[consent.pk])
        created += _notify(consent.user, Kind.EXPIRING, subject, params, link, prefs)
    return created


def _completed(now: datetime) -> int:
    since = now - timedelta(days=settings.NOTIFICATIONS_LOOKBACK_DAYS)
    consents = Consent.objects.filter(
        model_request__status=ModelRequest.Status.COMPLETED,
        model_request__finished_at__gte=since,
        status__in=(Consent.Status.GIVEN, Consent.Status.EXPIRED),
    ).select_related("user", "model_request")
    prefs = _preferences(c.user_id for c in consents)
    created = 0
    for consent in consents:
        link = reverse("portal:request", args=[consent.model_request_id])
        params = {"title": consent.model_request.title}
        subject = str(consent.model_request_id)
        created += _notify(consent.user, Kind.COMPLETED, subject, params, link, prefs)
    return created


def _withdrawn(now: datetime) -> int:
    since = now - timedelta(days=settings.NOTIFICATIONS_LOOKBACK_DAYS)
    consents = Consent.objects.filter(
        status=Consent.Status.WITHDRAWN, withdrawn_at__gte=since
    ).select_related("user", "model_request")
    prefs = _preferences(c.user_id for c in consents)
    created = 0
    for consent in consents:
        assert consent.withdrawn_at is not None
        subject = f"{consent.pk}:{int(consent.withdrawn_at.timestamp())}"
        params = {"title": consent.model_request.title}
        link = reverse("portal:consents")
        created += _notify(consent.user, Kind.WITHDRAWN, subject, params, link, prefs)
    return created


def notifications_produce(now: datetime | None = None) -> int:
    """Store every notification now due (once each). Returns how many were new."""
    now = now or timezone.now()
    return _new_requests(now) + _expiring(now) + _completed(now) + _withdrawn(now)


# -- step 2: e-mail -----------------------------------------------------------------------------


def unsubscribe_token(user: User, kind: str) -> str:
    return signing.dumps({"u": user.pk, "k": kind}, salt=UNSUBSCRIBE_SALT)


def unsubscribe_read(token: str) -> tuple[int, str] | None:
    """The (user id, kind) a signed unsubscribe token stands for, or None if forged."""
    try:
        data = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("k") not in Kind.values:
        return None
    user_id = data.get("u")
    return (user_id, data["k"]) if isinstance(user_id, int) else None


def _language_of(user: User) -> str:
    """The person's own language setting, else the portal's default (an e-mail has no browser)."""
    language = DataSubject.objects.filter(user_id=user.pk).values_list("language", flat=True)
    return language.first() or settings.LANGUAGE_CODE


def email_message(n: Notification) -> EmailMessage:
    """The notification's e-mail, in the person's language."""
    with translation.override(_language_of(n.user)):
        return _email_message(n)


def _email_message(n: Notification) -> EmailMessage:
    user = n.user
    unsubscribe = settings.SITE_URL + reverse(
        "portal:unsubscribe", args=[unsubscribe_token(user, n.kind)]
    )
    context = {
        "name": user.first_name or user.get_username(),
        "body": notification_body(n),
        "link": settings.SITE_URL + n.link,
        "kind": n.get_kind_display(),
        "unsubscribe": unsubscribe,
        "settings_url": settings.SITE_URL + reverse("portal:notification_settings"),
    }
    return EmailMessage(
        subject=notification_title(n),
        body=render_to_string("consent/email/notification.txt", context),
        to=[user.email],
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def _claim(n: Notification) -> bool:
    return bool(
        Notification.objects.filter(pk=n.pk, email_state=State.PENDING).update(
            email_state=State.SENDING, email_attempts=F("email_attempts") + 1
        )
    )


def notifications_send(now: datetime | None = None) -> int:
    """E-mail up to ``NOTIFICATIONS_EMAIL_BATCH`` pending notifications. Returns how many sent."""
    pending = list(
        Notification.objects.filter(email_state=State.PENDING)
        .select_related("user")
        .order_by("pk")[: settings.NOTIFICATIONS_EMAIL_BATCH]
    )
    if not pending:
        return 0
    sent = 0
    with get_connection(fail_silently=False) as connection:
        for n in pending:
            if not _claim(n):
                continue  # another sender has it
            try:
                message = email_message(n)
                message.connection = connection
                message.send()
            except Exception as exc:  # the server did not take it: try again later, a few times
                retry = n.email_attempts + 1 < settings.NOTIFICATIONS_MAX_ATTEMPTS
                Notification.objects.filter(pk=n.pk).update(
                    email_state=State.PENDING if retry else State.FAILED
                )
                logger.warning("notification %s not sent: %s", n.pk, type(exc).__name__)
                continue
            Notification.objects.filter(pk=n.pk).update(
                email_state=State.SENT, emailed_at=now or timezone.now()
            )
            sent += 1
    return sent
