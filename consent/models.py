"""Consent domain: notices, consents and the append-only, hash-chained consent log.

Statuses follow the W3C Data Privacy Vocabulary consent states (dpv:ConsentGiven,
dpv:ConsentRefused, dpv:ConsentWithdrawn, dpv:ConsentExpired).
"""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

GENESIS_HASH = "0" * 64


class DataSubject(models.Model):
    """Per-person consent settings. The pseudonym stands for the person in receipts."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_subject"
    )
    pseudonym = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    training_paused = models.BooleanField(
        default=False, help_text="Pause all training: no pod of this person takes part in rounds."
    )
    paused_changed_at = models.DateTimeField(null=True, blank=True)
    language = models.CharField(
        max_length=8,
        blank=True,
        default="",
        choices=settings.LANGUAGES,
        help_text="The portal's and notices' language for this person; empty: the browser's.",
    )

    def __str__(self) -> str:
        return f"subject {self.pseudonym}"


class PrivacyNotice(models.Model):
    """The plain-language notice of a model request, exactly as shown; hashed for consent."""

    model_request = models.ForeignKey(
        "training.ModelRequest", on_delete=models.PROTECT, related_name="notices"
    )
    version = models.PositiveIntegerField()
    language = models.CharField(max_length=16, default="en")
    # Structured sections ([{"heading", "paragraphs", "items"}]); the page renders exactly these.
    sections = models.JSONField()
    text = models.TextField()
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_request_id", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_request", "version", "language"], name="notice_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"notice v{self.version} ({self.language}) for {self.model_request_id}"


class ConsentStatus(models.TextChoices):
    GIVEN = "given", _("Given")
    REFUSED = "refused", _("Refused")
    WITHDRAWN = "withdrawn", _("Withdrawn")
    EXPIRED = "expired", _("Expired")


class Consent(models.Model):
    """One person's decision on one model request (at most one row per pair)."""

    Status = ConsentStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="consents"
    )
    model_request = models.ForeignKey(
        "training.ModelRequest", on_delete=models.PROTECT, related_name="consents"
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    notice = models.ForeignKey(PrivacyNotice, on_delete=models.PROTECT, related_name="consents")
    notice_hash = models.CharField(max_length=64, help_text="Hash of the notice the person saw.")
    plan_hash = models.CharField(max_length=64, help_text="The plan the decision is about.")
    pod = models.ForeignKey(
        "pods.Pod", on_delete=models.SET_NULL, null=True, blank=True, related_name="consents"
    )
    given_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField()
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-decided_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "model_request"], name="consent_one_per_request"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ConsentStatus.values), name="consent_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=ConsentStatus.GIVEN)
                | (Q(given_at__isnull=False) & Q(expires_at__isnull=False)),
                name="consent_given_has_dates",
            ),
            models.CheckConstraint(
                condition=~Q(status=ConsentStatus.WITHDRAWN) | Q(withdrawn_at__isnull=False),
                name="consent_withdrawn_has_date",
            ),
        ]

    def __str__(self) -> str:
        return f"consent {self.id} ({self.status})"


class EventType(models.TextChoices):
    GIVEN = "given", _("Consent given")
    REFUSED = "refused", _("Consent refused")
    WITHDRAWN = "withdrawn", _("Consent withdrawn")
    EXPIRED = "expired", _("Consent expired")
    POD_ASSIGNED = "pod_assigned", _("Pod assigned")


class EventMethod(models.TextChoices):
    PORTAL = "portal", _("Web portal")
    API = "api", _("API")
    DEVICE = "device", _("Device")
    SYSTEM = "system", _("System")


class AppendOnlyQuerySet(models.QuerySet["ConsentEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("Consent events are append-only; they cannot be updated.")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("Consent events are append-only; they cannot be deleted.")


class AppendOnlyError(Exception):
    pass


class ConsentEvent(models.Model):
    """An append-only, hash-chained record of a consent's history.

    Each event stores the previous event's hash (``GENESIS_HASH`` for the first), and its own
    hash over its content and that link, so removing, reordering or editing an event breaks
    the chain (``manage.py verify_consent_log``). Updates and deletes are refused here and, on
    PostgreSQL, by a trigger.
    """

    Type = EventType
    Method = EventMethod

    consent = models.ForeignKey(Consent, on_delete=models.PROTECT, related_name="events")
    seq = models.PositiveIntegerField()
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    at = models.DateTimeField(help_text="Server time at the event.")
    actor = models.CharField(max_length=100, help_text="Who acted: 'user:<pseudonym>' or 'system'.")
    method = models.CharField(max_length=16, choices=EventMethod.choices)
    notice_hash = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["consent_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["consent", "seq"], name="consent_event_seq_unique"),
            models.UniqueConstraint(fields=["consent", "prev_hash"], name="consent_event_no_fork"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.seq} of consent {self.consent_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Consent events are append-only; they cannot be updated.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("Consent events are append-only; they cannot be deleted.")
