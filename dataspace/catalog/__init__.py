"""Catalog loading: a JSON list of categories, validated whole before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from dataspace.errors import DomainError
from dataspace.models import DataCategory, slug_validator, validate_field_schema

BUNDLED = Path(__file__).with_name("categories.json")


class CatalogError(DomainError):
    code = "invalid_catalog"


def _validate_entry(index: int, entry: Any) -> dict[str, Any]:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be an object.")
    required = {"slug", "title", "description", "special_category", "fields"}
    missing = required - set(entry)
    if missing:
        raise CatalogError(f"{where}: missing {', '.join(sorted(missing))}.")
    unknown = set(entry) - required
    if unknown:
        raise CatalogError(f"{where}: unknown keys {', '.join(sorted(unknown))}.")
    try:
        if not isinstance(entry["slug"], str):
            raise ValidationError("slug must be a string.")
        slug_validator(entry["slug"])
        if not isinstance(entry["title"], str) or not entry["title"].strip():
            raise ValidationError("title must be a non-empty string.")
        if not isinstance(entry["description"], str):
            raise ValidationError("description must be a string.")
        if not isinstance(entry["special_category"], bool):
            raise ValidationError("special_category must be true or false.")
        validate_field_schema(entry["fields"])
    except ValidationError as exc:
        raise CatalogError(f"{where} ({entry.get('slug', '?')}): {exc.messages[0]}") from None
    return entry


def parse_catalog(text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"not valid JSON (line {exc.lineno}, column {exc.colno}).") from None
    if not isinstance(data, list):
        raise CatalogError("the file must hold a JSON list of categories.")
    entries = [_validate_entry(i, e) for i, e in enumerate(data)]
    slugs = [e["slug"] for e in entries]
    duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicates:
        raise CatalogError(f"slug {duplicates[0]!r} appears more than once.")
    return entries


@transaction.atomic
def catalog_load(*, text: str) -> tuple[int, int]:
    """Create or update categories from catalog JSON. Idempotent; all or nothing.

    Returns (created, updated) counts; an unchanged category counts as neither.
    """
    created = updated = 0
    for entry in parse_catalog(text):
        values = {k: entry[k] for k in ("title", "description", "special_category", "fields")}
        category = DataCategory.objects.select_for_update().filter(slug=entry["slug"]).first()
        if category is None:
            DataCategory.objects.create(slug=entry["slug"], **values)
            created += 1
        elif any(getattr(category, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(category, k, v)
            category.save()
            updated += 1
    return created, updated
