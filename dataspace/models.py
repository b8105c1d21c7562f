"""The data-category catalog: what kinds of personal data pods hold, field by field."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext

from training.modelspec.fields import FieldError, parse_field, parse_fields

slug_validator = RegexValidator(
    r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
    "A category slug is dotted lowercase words, e.g. 'health.breast_screening'.",
)


def validate_field_schema(fields: Any) -> None:
    """A field schema is a non-empty list of typed fields with unique names: {name, type, unit,
    description} plus a range, a missing-value policy, and a categorical field's values and
    encoding (training/modelspec/fields.py, which the pods and the submission check read)."""
    try:
        parse_fields(fields)
    except FieldError as exc:
        raise ValidationError(exc.message) from None


def describe_field(field: dict[str, Any]) -> str:
    """A field's kind and unit in plain words (e.g. "a whole number from 18 to 110, in
    years"), for notices; just the unit for a field the typed reader cannot take."""
    try:
        return parse_field(field).describe(gettext)
    except FieldError:
        return str(field.get("unit") or "")


class DataCategory(models.Model):
    slug = models.CharField(max_length=100, unique=True, validators=[slug_validator])
    title = models.CharField(max_length=200)
    description = models.TextField()
    special_category = models.BooleanField(
        default=False,
        help_text="Special category of personal data (GDPR Art. 9), e.g. health data.",
    )
    fields = models.JSONField(validators=[validate_field_schema])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "data categories"

    def __str__(self) -> str:
        return self.slug

    def field_names(self) -> list[str]:
        return [f["name"] for f in self.fields]

    def field(self, name: str) -> dict[str, Any] | None:
        return next((f for f in self.fields if f["name"] == name), None)
