"""Providers and their model requests (training plans). DESIGN.md sections 3 and 4."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from training.modelspec.texts import ProviderTexts, provider_texts


class Provider(models.Model):
    """An AI provider: the organisation that submits model requests and receives models."""

    name = models.CharField(max_length=200, unique=True)
    contact_email = models.EmailField()
    dpo_name = models.CharField("data protection officer", max_length=200, blank=True)
    dpo_email = models.EmailField("DPO e-mail", blank=True)
    address = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PurposeCategory(models.TextChoices):
    """Purposes in plain words; values follow the W3C DPV purpose taxonomy."""

    SCIENTIFIC_RESEARCH = "dpv:ScientificResearch", _("Scientific research")
    HEALTH_RESEARCH = "dpv:HealthResearch", _("Health research")
    SERVICE_IMPROVEMENT = "dpv:ServiceOptimisation", _("Improving a service")
    RESEARCH_AND_DEVELOPMENT = "dpv:ResearchAndDevelopment", _("Product research and development")
    PUBLIC_BENEFIT = "dpv:PublicBenefit", _("Public benefit")


class ModelRequestStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    RECRUITING = "recruiting", _("Recruiting")
    TRAINING = "training", _("Training")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


def weights_upload_to(instance: ModelRequest, filename: str) -> str:
    return f"requests/{instance.id}/initial.safetensors"


class ModelRequest(models.Model):
    """A provider's training plan. Its plan (spec, weights, notice) is immutable once recruiting:
    consent is given to exactly this plan, identified by ``plan_hash``.
    """

    Status = ModelRequestStatus
    OPEN_STATUSES: ClassVar[tuple[str, ...]] = (Status.RECRUITING, Status.TRAINING)
    # Fields that make up the plan people consent to; frozen after draft.
    PLAN_FIELDS: ClassVar[tuple[str, ...]] = (
        "provider_id",
        "title",
        "purpose",
        "purpose_category",
        "data_category_id",
        "features",
        "label",
        "spec",
        "weights",
        "weights_sha256",
        "rounds",
        "cohort_size",
        "min_participants",
        "secagg_threshold",
        "dp",
        "retention_days",
        "plan_hash",
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="requests")
    title = models.CharField(max_length=200)
    purpose = models.TextField(help_text="The purpose in plain language, shown to people.")
    purpose_category = models.CharField(
        max_length=64, choices=PurposeCategory.choices, default=PurposeCategory.SCIENTIFIC_RESEARCH
    )
    data_category = models.ForeignKey(
        "dataspace.DataCategory", on_delete=models.PROTECT, related_name="model_requests"
    )
    features = models.JSONField(help_text="Names of the category fields the model reads.")
    label = models.CharField(max_length=200, blank=True)
    spec = models.JSONField(help_text="The declarative model spec, exactly as submitted.")
    weights = models.FileField(upload_to=weights_upload_to, max_length=300)
    weights_sha256 = models.CharField(max_length=64)
    weights_size = models.PositiveBigIntegerField(default=0)
    parameter_count = models.PositiveBigIntegerField(default=0)
    rounds = models.PositiveIntegerField()
    cohort_size = models.PositiveIntegerField()
    min_participants = models.PositiveIntegerField()
    secagg_threshold = models.FloatField(
        help_text="Fraction of each neighbourhood needed to unmask."
    )
    dp = models.JSONField(null=True, blank=True, help_text="Differential-privacy settings, if any.")
    retention_days = models.PositiveIntegerField(
        default=365, help_text="How long the service keeps this request's records and models."
    )
    recruiting_deadline = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    status_reason = models.TextField(blank=True)
    plan_hash = models.CharField(max_length=64, blank=True)
    current_round = models.PositiveIntegerField(default=0)
    epsilon_spent = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    recruiting_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ModelRequestStatus.values), name="model_request_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(min_participants__gte=2)
                & Q(min_participants__lte=models.F("cohort_size")),
                name="model_request_participants_within_cohort",
            ),
            models.CheckConstraint(
                condition=Q(secagg_threshold__gt=0.5) & Q(secagg_threshold__lte=1.0),
                name="model_request_threshold_range",
            ),
            models.CheckConstraint(
                condition=Q(rounds__gte=1), name="model_request_rounds_positive"
            ),
            models.CheckConstraint(
                condition=Q(status=ModelRequestStatus.DRAFT) | ~Q(plan_hash=""),
                name="model_request_plan_hash_when_open",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            self._refuse_plan_change()
        super().save(*args, **kwargs)

    @property
    def texts(self) -> ProviderTexts:
        """The provider's title and purpose in each language its spec gives them in."""
        return provider_texts(self.spec)

    # draft → recruiting → training → completed | failed | cancelled (DESIGN.md section 3)
    TRANSITIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        Status.DRAFT: (Status.RECRUITING, Status.CANCELLED),
        Status.RECRUITING: (Status.TRAINING, Status.CANCELLED),
        Status.TRAINING: (Status.COMPLETED, Status.FAILED, Status.CANCELLED),
    }
    FINISHED: ClassVar[tuple[str, ...]] = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    def move_to(self, status: str, *, now: datetime, reason: str = "") -> None:
        """The one place a request's status changes; the caller holds the row's lock and saves.

        Refuses a move the life cycle does not have (a finished request stays finished)."""
        if status not in self.TRANSITIONS.get(self.status, ()):
            raise ValidationError(f"A {self.status} request cannot become {status}.")
        self.status = status
        if reason:
            self.status_reason = reason
        if status == self.Status.RECRUITING:
            self.recruiting_at = now
        if status in self.FINISHED:
            self.finished_at = now

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    @property
    def epsilon_budget(self) -> float | None:
        return float(self.dp["target_epsilon"]) if self.dp else None

    @property
    def delta(self) -> float | None:
        return float(self.dp["delta"]) if self.dp else None

    def epsilon_after(self, rounds: int) -> float | None:
        """ε against the service after ``rounds`` rounds of one person's data, with no
        amplification by subsampling (q = 1): the figure each pod's own ledger computes
        (``pods.agent.plan``) and the portal shows. None without DP."""
        if not self.dp:
            return None
        from training.secagg.dp import epsilon  # Opacus loads torch: only where ε is shown

        return epsilon(float(self.dp["noise_multiplier"]), 1.0, rounds, float(self.dp["delta"]))

    def _refuse_plan_change(self) -> None:
        stored = (
            type(self)
            .objects.filter(pk=self.pk)
            .values("status", *[f.removesuffix("_id") for f in self.PLAN_FIELDS])
            .first()
        )
        if stored is None or stored["status"] == self.Status.DRAFT:
            return
        for field in self.PLAN_FIELDS:
            name = field.removesuffix("_id")
            current = getattr(self, field)
            if name == "weights":
                current = current.name
            if stored[name] != current:
                raise ValidationError(
                    f"The plan of a model request is immutable once recruiting ({name} changed)."
                )


class ProviderClient(models.Model):
    """Links an OAuth2 application (client credentials) to the provider it acts for."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="clients")
    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="provider_client",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.provider} client"


class RoundStatus(models.TextChoices):
    ADVERTISING = "advertise_keys", _("Advertising keys")
    SHARING = "share_keys", _("Sharing keys")
    COLLECTING = "masked_input", _("Collecting masked inputs")
    CHECKING = "consistency_check", _("Confirming the survivors")
    UNMASKING = "unmask", _("Unmasking")
    AGGREGATING = "aggregating", _("Aggregating")
    COMPLETED = "completed", _("Completed")
    ABORTED = "aborted", _("Aborted")


class TrainingRound(models.Model):
    """One secure-aggregation round of a model request (DESIGN.md section 5)."""

    Status = RoundStatus

    model_request = models.ForeignKey(
        ModelRequest, on_delete=models.CASCADE, related_name="rounds_run"
    )
    number = models.PositiveIntegerField(help_text="1-based; a retried round keeps its number.")
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ADVERTISING)
    status_reason = models.TextField(blank=True)
    cohort_size = models.PositiveIntegerField(default=0)
    survivors = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    epsilon = models.FloatField(
        null=True, blank=True, help_text="Cumulative epsilon after this round."
    )
    # Secure aggregation: the masked vector's length (model coordinates + metadata coordinates),
    # the protocol's persisted server state, and the current stage's deadline.
    vector_length = models.PositiveBigIntegerField(default=0)
    base_version = models.ForeignKey(
        "ModelVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    secagg_state = models.JSONField(default=dict, blank=True)
    stage_deadline = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model_request_id", "number", "attempt"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_request", "number", "attempt"], name="training_round_unique"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RoundStatus.values), name="round_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"round {self.number}.{self.attempt} of {self.model_request_id}"


def version_upload_to(instance: ModelVersion, filename: str) -> str:
    return f"requests/{instance.model_request_id}/round-{instance.round_number:04d}.safetensors"


class ModelVersion(models.Model):
    """The global model after a round (round 0: the provider's initial weights)."""

    model_request = models.ForeignKey(
        ModelRequest, on_delete=models.CASCADE, related_name="versions"
    )
    round_number = models.PositiveIntegerField()
    weights = models.FileField(upload_to=version_upload_to, max_length=300)
    sha256 = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    participants = models.PositiveIntegerField(default=0)
    epsilon = models.FloatField(null=True, blank=True)
    optimizer_state = models.FileField(
        upload_to=version_upload_to,
        max_length=300,
        blank=True,
        help_text="Server optimizer moments (FedAdam) carried to the next round; never served.",
    )
    control = models.FileField(
        upload_to=version_upload_to,
        max_length=300,
        blank=True,
        help_text=(
            "SCAFFOLD's server control variate c after this round (safetensors), served to the "
            "pods of the next round with the weights."
        ),
    )
    control_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_request_id", "round_number"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_request", "round_number"], name="model_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"model v{self.round_number} of {self.model_request_id}"


class ParticipantStage(models.TextChoices):
    SELECTED = "selected", _("Selected")
    ADVERTISED = "advertise_keys", _("Advertised keys")
    SHARED = "share_keys", _("Shared keys")
    MASKED = "masked_input", _("Sent masked input")
    CHECKED = "consistency_check", _("Signed the survivors")
    UNMASKED = "unmask", _("Helped unmask")


class RoundParticipant(models.Model):
    """A pod in a round's cohort: how far it got. This is the person's participation history."""

    Stage = ParticipantStage

    round = models.ForeignKey(TrainingRound, on_delete=models.CASCADE, related_name="participants")
    pod = models.ForeignKey("pods.Pod", on_delete=models.PROTECT, related_name="participations")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="participations"
    )
    index = models.PositiveIntegerField(help_text="1-based index in the round (Shamir x).")
    stage_reached = models.CharField(
        max_length=20, choices=ParticipantStage.choices, default=ParticipantStage.SELECTED
    )
    dropped_at_stage = models.CharField(max_length=20, blank=True)
    drop_reason = models.CharField(max_length=100, blank=True)
    masked_input = models.FileField(upload_to="masked/", max_length=300, blank=True)
    masked_sha256 = models.CharField(max_length=64, blank=True)
    # The pod's answer to the current stage (signed public keys, encrypted shares, or unmasking
    # shares), kept until the stage closes and the protocol state takes it in; then cleared.
    reply = models.JSONField(null=True, blank=True, editable=False)
    # The size of the key-log head the pod holds (from its advertise answer): its share_keys
    # message carries a consistency proof from there to the current head.
    key_log_size = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["round_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["round", "pod"], name="participant_once_per_round"),
            models.UniqueConstraint(fields=["round", "index"], name="participant_index_unique"),
            models.CheckConstraint(
                condition=Q(stage_reached__in=ParticipantStage.values),
                name="participant_stage_valid",
            ),
        ]
        # "Has every live pod answered?" after each batch of answers (rounds.closing): a seek,
        # not a walk over the round's rows (O(n) per batch, O(n²) a stage at 1,000 pods).
        indexes = [
            models.Index(
                fields=["round", "dropped_at_stage", "stage_reached"], name="participant_waiting"
            )
        ]

    def __str__(self) -> str:
        return f"participant {self.index} of {self.round}"

    # A pod that declined its task is dropped with this prefix and its own reason code.
    DECLINED_PREFIX: ClassVar[str] = "declined:"

    @property
    def dropped(self) -> bool:
        return bool(self.dropped_at_stage)

    @property
    def declined_because(self) -> str | None:
        """The pod's own reason code when it declined its task, else None."""
        if self.drop_reason.startswith(self.DECLINED_PREFIX):
            return self.drop_reason.removeprefix(self.DECLINED_PREFIX)
        return None

    @property
    def input_in_sum(self) -> bool:
        """Whether this pod's masked input was in its round's sum: collected, and not dropped
        before collection closed (one dropped while unmasking is still in the sum)."""
        after_collection = (
            ParticipantStage.MASKED,
            ParticipantStage.CHECKED,
            ParticipantStage.UNMASKED,
        )
        return self.stage_reached in after_collection and self.dropped_at_stage in (
            "",
            ParticipantStage.CHECKED,
            ParticipantStage.UNMASKED,
        )
