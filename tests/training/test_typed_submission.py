"""Submission against a typed catalog: each refusal with its code and JSON path, nothing
stored; a typed request is accepted and its notice shows each field's kind and unit."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from consent.models import PrivacyNotice
from consent.notices import notice_text
from dataspace.demo import demo_weights
from dataspace.models import DataCategory
from tests.typed_category import CATEGORY, FIELDS, SLUG, catalog_file, sleep_spec
from training.models import ModelRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def typed(tmp_path: Path) -> None:
    call_command("load_categories", str(catalog_file(tmp_path / "catalog.json")))


def submit(api: Client, spec: dict[str, Any], weights: bytes | None = None) -> Any:
    if weights is None:
        weights = demo_weights(spec) if _valid(spec) else b"\0" * 16
    return api.post(
        "/api/v1/model-requests/",
        {"spec": json.dumps(spec), "weights": io.BytesIO(weights)},
    )


def _valid(spec: dict[str, Any]) -> bool:
    from training.modelspec import SpecError, validate_spec

    try:
        validate_spec(spec)
    except SpecError:
        return False
    return True


def refused(api: Client, spec: dict[str, Any], weights: bytes | None = None) -> tuple[str, Any]:
    before = ModelRequest.objects.count()
    response = submit(api, spec, weights)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert ModelRequest.objects.count() == before
    return error["code"], error["fields"]


def test_a_typed_request_is_accepted_and_its_notice_shows_kind_and_unit(
    api: Client, typed: None
) -> None:
    response = submit(api, sleep_spec())
    assert response.status_code == 201, response.content
    model_request = ModelRequest.objects.get(pk=response.json()["id"])
    assert model_request.spec["data"]["schema"][0]["values"] == ["low", "medium", "high"]
    text = notice_text(PrivacyNotice.objects.get(model_request=model_request).sections)
    assert "- age (a whole number from 18 to 99, in years): Age on the day." in text
    assert "- activity (one of low, medium, high): How active the day was." in text
    assert "- sleep_hours (a number from 0 to 24, in hours)" in text
    assert "- rested (yes or no)" in text


def test_each_refusal_names_its_field(api: Client, typed: None) -> None:
    # Free text as a feature or as a label.
    spec = sleep_spec(schema=False, features=["age", "diary"], width=2)
    assert refused(api, spec) == (
        "field_not_trainable",
        {"data.features[1]": ["'diary' is free text: no model can train on it."]},
    )
    code, fields = refused(api, sleep_spec(schema=False, features=["age"], width=1, label="diary"))
    assert (code, list(fields)) == ("field_not_trainable", ["data.label"])
    # A categorical field without the catalog's schema in the plan.
    code, fields = refused(api, sleep_spec(schema=False))
    assert (code, list(fields)) == ("schema_required", ["data.schema"])
    # Without a schema, numeric fields only: the width still must match.
    code, fields = refused(api, sleep_spec(schema=False, features=["age", "smoker"], width=3))
    assert code == "shape_mismatch"
    # A schema that is not the catalog's.
    spec = sleep_spec()
    spec["data"]["schema"][0] = {**spec["data"]["schema"][0], "values": ["high", "medium", "low"]}
    code, fields = refused(api, spec)
    assert (code, list(fields)) == ("schema_mismatch", ["data.schema[0]"])
    # Label 0..9 with two outputs; 0/1 for BCE.
    code, fields = refused(api, sleep_spec(label="mood", outputs=2))
    assert (code, list(fields)) == ("label_not_fit", ["data.label"])
    assert "10 classes" in fields["data.label"][0]
    bce = sleep_spec(label="mood", outputs=1)
    bce["training"]["loss"] = "bce_with_logits"
    assert refused(api, bce)[0] == "label_not_fit"
    # Unknown fields, as before.
    code, fields = refused(api, sleep_spec(schema=False, features=["age", "weight"], width=2))
    assert (code, list(fields)) == ("unknown_feature", ["data.features"])


BAD_CATEGORIES = [
    ({"type": "categorical"}, "fields[0].values must list 2 to 1000"),
    ({"encoding": "hash"}, "fields[0].encoding must be one of one_hot, index"),
    ({"missing": {"fill": "extreme"}}, "fields[0].missing.fill"),
    ({"range": [0, 1]}, "fields[0].range is only for int, float and date"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CATEGORIES)
def test_load_categories_refuses_a_malformed_typed_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    category = copy.deepcopy(CATEGORY)
    first = {**FIELDS[0], **change}
    if change.get("type") == "categorical":
        first.pop("values")
    category["fields"][0] = first
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([category]))
    with pytest.raises(CommandError) as excinfo:
        call_command("load_categories", str(path))
    assert message in str(excinfo.value)
    assert "Nothing was written" in str(excinfo.value)
    assert not DataCategory.objects.filter(slug=SLUG).exists()
