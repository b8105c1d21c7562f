"""The pod registry: devices people paired with their account. DESIGN.md §3, §8."""

from __future__ import annotations

import base64
import hashlib
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


def key_fingerprint(public_key: bytes) -> str:
    """Human-comparable fingerprint of an Ed25519 public key: SHA-256, first 16 bytes, grouped.

    Shown both by the pod at pairing and in the portal, so a person can compare them.
    """
    digest = hashlib.sha256(public_key).digest()[:16]
    text = base64.b32encode(digest).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


class PodStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


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
    # Names and coarse counts only, reported by the pod for its owner's eyes.
    categories_held = models.JSONField(default=list, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["owner_id", "name"]
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
