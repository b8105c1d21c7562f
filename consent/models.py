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
    RENEWED = "renewed", _("Consent renewed")


class EventMethod(models.TextChoices):
    PORTAL = "portal", _("Web portal")
    API = "api", _("API")
    DEVICE = "device", _("Device")
    SYSTEM = "system", _("System")
    # A standing rule the person wrote decided for them (it only ever declines).
    RULE = "rule", _("Your standing rule")


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


# -- standing preferences (issue 15) ----------------------------------------------------------


class RuleAction(models.TextChoices):
    """What a standing rule does with a matching request. There is deliberately no "agree":
    consent, and above all explicit consent to special-category data (GDPR Art. 9(2)(a)),
    is always the person's own act."""

    DECLINE = "decline", _("Decline automatically")
    NOTIFY = "notify", _("Notify me")
    ASK = "ask", _("Ask me")


class ConsentRule(models.Model):
    """A person's standing preference: every condition given must hold for a request to match
    (an empty condition matches any request)."""

    Action = RuleAction

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consent_rules"
    )
    provider = models.ForeignKey(
        "training.Provider", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    purpose_category = models.CharField(max_length=64, blank=True)
    data_category = models.ForeignKey(
        "dataspace.DataCategory", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # None: any data; True: only special-category (Art. 9) data; False: only other data.
    special_category = models.BooleanField(null=True, blank=True)
    without_dp = models.BooleanField(default=False)
    epsilon_above = models.FloatField(null=True, blank=True)
    cohort_below = models.PositiveIntegerField(null=True, blank=True)
    action = models.CharField(max_length=16, choices=RuleAction.choices, default=RuleAction.ASK)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user_id", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=RuleAction.values), name="consent_rule_action_valid"
            ),
            models.CheckConstraint(
                condition=Q(epsilon_above__isnull=True) | Q(epsilon_above__gte=0),
                name="consent_rule_epsilon_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"rule {self.pk} ({self.action})"


# -- notifications (issue 15) -------------------------------------------------------------------


class NotificationKind(models.TextChoices):
    NEW_REQUEST = "new_request", _("New requests that match your data")
    EXPIRING = "expiring", _("Consents about to expire")
    COMPLETED = "completed", _("Requests you took part in are completed")
    WITHDRAWN = "withdrawn", _("Confirmation of a withdrawal")


class EmailState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"  # claimed; never sent again, even if the sender died
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Not sent (no address or switched off)"
    FAILED = "failed", "Failed"


class Notification(models.Model):
    """One message to one person, in the portal inbox and (maybe) by e-mail. At most one per
    (person, kind, subject): the row is claimed before anything is sent, so a retried or
    doubled scheduler run never sends twice."""

    Kind = NotificationKind
    EmailState = EmailState

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    subject = models.CharField(max_length=200, help_text="What it is about (request, consent).")
    params = models.JSONField(default=dict, blank=True)
    link = models.CharField(max_length=500, help_text="Portal path the message points to.")
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    email_state = models.CharField(
        max_length=16, choices=EmailState.choices, default=EmailState.PENDING
    )
    email_attempts = models.PositiveSmallIntegerField(default=0)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind", "subject"], name="notification_once_per_subject"
            )
        ]
        indexes = [models.Index(fields=["email_state"], name="notification_email_state")]

    def __str__(self) -> str:
        return f"{self.kind} notification {self.pk}"


class NotificationPreference(models.Model):
    """Which kinds of notification a person also gets by e-mail (the inbox always has them)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    new_request = models.BooleanField(default=True)
    expiring = models.BooleanField(default=True)
    completed = models.BooleanField(default=True)
    withdrawn = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"notification preference of user {self.user_id}"

    def emails(self, kind: str) -> bool:
        return bool(getattr(self, kind))
