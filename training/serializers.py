"""Output serializers of the provider API (inputs are parsed by the model-spec validator)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from consent.models import Consent
from dataspace.models import DataCategory
from training.modelspec.fields import ENCODINGS, FIELD_TYPES

from .models import ModelRequest, TrainingRound


class FieldSchemaOutput(serializers.Serializer[dict[str, Any]]):
    """A typed catalog field (training/modelspec/fields.py); optional parts only when set."""

    name = serializers.CharField()
    type = serializers.ChoiceField(choices=list(FIELD_TYPES))
    unit = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    values = serializers.ListField(child=serializers.CharField(), required=False)
    encoding = serializers.ChoiceField(choices=list(ENCODINGS), required=False)
    range = serializers.ListField(
        child=serializers.JSONField(), min_length=2, max_length=2, required=False
    )
    missing = serializers.JSONField(
        required=False, help_text='"drop", or {"fill": value}; absent: a value is required'
    )


class CategoryOutput(serializers.ModelSerializer[DataCategory]):
    class Meta:
        model = DataCategory
        fields = ("slug", "title", "description", "special_category", "fields")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # A field called "fields" cannot be a class attribute: it would shadow Serializer.fields.
        declared = super().get_fields()
        declared["fields"] = FieldSchemaOutput(many=True)
        return declared


class ConsentCountsOutput(serializers.Serializer[dict[str, int]]):
    given = serializers.IntegerField()
    refused = serializers.IntegerField()
    withdrawn = serializers.IntegerField()
    expired = serializers.IntegerField()


def consent_counts(model_request: ModelRequest) -> dict[str, int]:
    """Aggregates only: a provider never sees who decided what."""
    status = Consent.Status
    counts = Consent.objects.filter(model_request=model_request).aggregate(
        given=Count("pk", filter=Q(status=status.GIVEN)),
        refused=Count("pk", filter=Q(status=status.REFUSED)),
        withdrawn=Count("pk", filter=Q(status=status.WITHDRAWN)),
        expired=Count("pk", filter=Q(status=status.EXPIRED)),
    )
    return {k: int(v) for k, v in counts.items()}


class ModelRequestOutput(serializers.ModelSerializer[ModelRequest]):
    category: serializers.SlugRelatedField[DataCategory] = serializers.SlugRelatedField(
        source="data_category", slug_field="slug", read_only=True
    )
    consents = serializers.SerializerMethodField()
    epsilon_budget = serializers.FloatField(allow_null=True)
    delta = serializers.FloatField(allow_null=True)

    class Meta:
        model = ModelRequest
        fields = (
            "id",
            "title",
            "purpose",
            "purpose_category",
            "category",
            "features",
            "label",
            "status",
            "status_reason",
            "plan_hash",
            "weights_sha256",
            "parameter_count",
            "rounds",
            "current_round",
            "cohort_size",
            "min_participants",
            "secagg_threshold",
            "epsilon_spent",
            "epsilon_budget",
            "delta",
            "consents",
            "created_at",
            "recruiting_at",
            "finished_at",
        )

    @extend_schema_field(ConsentCountsOutput)
    def get_consents(self, obj: ModelRequest) -> dict[str, int]:
        return consent_counts(obj)


class RoundOutput(serializers.ModelSerializer[TrainingRound]):
    class Meta:
        model = TrainingRound
        fields = (
            "number",
            "attempt",
            "status",
            "status_reason",
            "cohort_size",
            "survivors",
            "metrics",
            "epsilon",
            "started_at",
            "finished_at",
        )


class ErrorDetailOutput(serializers.Serializer[dict[str, Any]]):
    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {
            "code": serializers.CharField(help_text="Stable, machine-readable"),
            "message": serializers.CharField(help_text="One sentence for people"),
            "fields": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                help_text="Per-field problems, keyed by JSON path",
            ),
        }


class ErrorOutput(serializers.Serializer[dict[str, Any]]):
    error = ErrorDetailOutput()
