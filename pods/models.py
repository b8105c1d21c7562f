"""The pod registry: devices people paired with their account. DESIGN.md §3, §8."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from pods.agent.keylog import LogEntry
from pods.agent.protocol import key_fingerprint

__all__ = [
    "AppendOnlyError",
    "KeyLogEntry",
    "PairingIntent",
    "Pod",
    "PodStatus",
    "PodToken",
    "key_fingerprint",
]


class PodStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    REVOKED = "revoked", _("Revoked")


class Pod(models.Model):
    Status = PodStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pods"
    )
    name = models.CharField(max_length=100)
    public_key = models.BinaryField(max_length=32, help_text="Raw Ed25519 identity public key.")
    fingerprint = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    agent_version = models.CharField(max_length=50, blank=True)
    # Made by an operator (``provision_pods``), not paired by a person: demos and load tests
    # only. Simulated pods never share a cohort with real ones.
    simulated = models.BooleanField(default=False, editable=False)
    # Names and coarse counts only, reported by the pod for its owner's eyes.
    categories_held = models.JSONField(default=list, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # The channel of the pod's live control connection ("" when offline); indexed: heartbeats
    # are written by channel name.
    channel_name = models.CharField(max_length=200, blank=True, default="")
    connected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["owner_id", "name"]
        indexes = [models.Index(fields=["channel_name"], name="pod_channel_name")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=PodStatus.values), name="pod_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:9]})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    def holds(self, category_slug: str) -> bool:
        return any(c.get("slug") == category_slug for c in self.categories_held or [])


class PairingIntent(models.Model):
    """A pod's request to be paired, bound to one RFC 8628 device grant.

    The pod proves possession of its identity key by signing the device code (a secret only it
    and the server know); the person then sees the same name and fingerprint when approving.
    """

    device_grant = models.OneToOneField(
        settings.OAUTH2_PROVIDER_DEVICE_GRANT_MODEL,
        on_delete=models.CASCADE,
        related_name="pairing_intent",
    )
    name = models.CharField(max_length=100)
    public_key = models.BinaryField(max_length=32)
    fingerprint = models.CharField(max_length=64)
    agent_version = models.CharField(max_length=50, blank=True)
    pod = models.OneToOneField(
        Pod, on_delete=models.CASCADE, null=True, blank=True, related_name="pairing_intent"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"pairing of {self.name} ({self.fingerprint[:9]})"


class PodToken(models.Model):
    """Which OAuth2 tokens were issued to which pod, so revoking a pod ends exactly its tokens."""

    pod = models.ForeignKey(Pod, on_delete=models.CASCADE, related_name="tokens")
    access_token = models.OneToOneField(
        settings.OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="pod_token",
    )
    refresh_token = models.OneToOneField(
        settings.OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="pod_token",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"token of pod {self.pod_id}"


class AppendOnlyError(Exception):
    """An attempt to change or remove a key-log entry."""


class KeyLogQuerySet(models.QuerySet["KeyLogEntry"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("The key log is append-only; entries cannot be updated.")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("The key log is append-only; entries cannot be deleted.")


class KeyLogEntry(models.Model):
    """One leaf of the append-only key log (RFC 9162 style; ``pods.agent.keylog``).

    Written when a pod's identity key is registered (pairing, provisioning), never changed:
    the model refuses updates and deletes and, on PostgreSQL, so does a trigger. The entry
    outlives its pod (no database foreign key: deleting an account must not rewrite history),
    and holds only the pod id, an account commitment that only its person can recognise, the
    public key and the time.
    """

    index = models.PositiveBigIntegerField(unique=True)
    pod = models.ForeignKey(
        Pod,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="key_log_entries",
    )
    account = models.BinaryField(max_length=32, help_text="account_commitment(pseudonym, pod id)")
    public_key = models.BinaryField(max_length=32)
    timestamp_ms = models.PositiveBigIntegerField()
    leaf_hash = models.BinaryField(max_length=32, help_text="RFC 9162 leaf hash of the entry.")

    objects = KeyLogQuerySet.as_manager()

    class Meta:
        ordering = ["index"]

    def __str__(self) -> str:
        return f"key-log entry #{self.index}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("The key log is append-only; entries cannot be updated.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("The key log is append-only; entries cannot be deleted.")

    @property
    def entry(self) -> LogEntry:
        return LogEntry(
            index=self.index,
            pod_id=str(self.pod_id),
            account=bytes(self.account),
            public_key=bytes(self.public_key),
            timestamp_ms=self.timestamp_ms,
        )

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(bytes(self.public_key))

    @property
    def logged_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
