"""The data-category catalog: what kinds of personal data pods hold, field by field."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

FIELD_TYPES = ("float", "int", "bool", "string")

slug_validator = RegexValidator(
    r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
    "A category slug is dotted lowercase words, e.g. 'health.breast_screening'.",
)


def validate_field_schema(fields: Any) -> None:
    """A field schema is a non-empty list of {name, type, unit, description} with unique names."""
    if not isinstance(fields, list) or not fields:
        raise ValidationError("The field schema must be a non-empty list.")
    seen: set[str] = set()
    for index, field in enumerate(fields):
        where = f"fields[{index}]"
        if not isinstance(field, dict):
            raise ValidationError(f"{where} must be an object.")
        unknown = set(field) - {"name", "type", "unit", "description"}
        if unknown:
            raise ValidationError(f"{where} has unknown keys: {', '.join(sorted(unknown))}.")
        name = field.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValidationError(f"{where}.name must be a non-empty string.")
        if name in seen:
            raise ValidationError(f"{where}.name {name!r} appears twice.")
        seen.add(name)
        if field.get("type") not in FIELD_TYPES:
            raise ValidationError(f"{where}.type must be one of {', '.join(FIELD_TYPES)}.")
        for key in ("unit", "description"):
            if not isinstance(field.get(key, ""), str):
                raise ValidationError(f"{where}.{key} must be a string.")


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
