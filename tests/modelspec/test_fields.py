"""Typed catalog fields: declarations refused with the part at fault, values read strictly,
records encoded exactly as the schema says (one-hot, index, dates, policies), and the spec
checks that a model can train on its fields."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import numpy as np
import pytest

from tests.typed_category import FIELDS, WIDTH, sleep_spec
from training.modelspec import SpecError, validate_spec
from training.modelspec.fields import (
    MISSING,
    FieldError,
    encode_rows,
    label_domain,
    parse_field,
    parse_fields,
    read_value,
)

CAT = {"name": "c", "type": "categorical", "values": ["a", "b", "c"]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "type": "text"}, "type must be one of float, int, bool, string"),
        ({"name": "x", "type": "string"}, None),
        ({"name": "x", "type": "categorical"}, "values must list 2 to 1000"),
        ({"name": "x", "type": "categorical", "values": ["a", "a"]}, "lists a value twice"),
        ({**CAT, "encoding": "hash"}, "encoding must be one of one_hot, index"),
        ({"name": "x", "type": "float", "values": ["a"]}, "only for categorical"),
        ({"name": "x", "type": "bool", "range": [0, 1]}, "only for int, float and date"),
        ({"name": "x", "type": "int", "range": [5, 1]}, "lowest ≤ highest"),
        ({"name": "x", "type": "int", "range": [1.5, 3]}, "expected int"),
        ({"name": "x", "type": "date", "range": ["2020-13-01", "2021-01-01"]}, "expected date"),
        ({"name": "x", "type": "int", "missing": "zero"}, 'must be "drop" or {"fill": value}'),
        ({"name": "x", "type": "int", "range": [0, 9], "missing": {"fill": 10}}, "outside"),
        ({**CAT, "missing": {"fill": "d"}}, "not one of the category's values"),
        ({"name": "x", "type": "int", "missing": {"fill": None}}, "cannot itself be missing"),
        ({"name": "x", "type": "float", "colour": "red"}, "unknown keys: colour"),
    ],
)
def test_field_declarations_are_checked_whole(raw: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert not parse_field(raw).trainable
        return
    with pytest.raises(FieldError) as excinfo:
        parse_field(raw, "fields[0]")
    assert message in excinfo.value.message
    assert excinfo.value.message.startswith("fields[0]")


def test_the_test_category_parses_and_round_trips() -> None:
    fields = parse_fields(FIELDS)
    assert [f.width for f in fields][:4] == [3, 1, 1, 1]
    assert parse_fields([f.as_dict() for f in fields]) == fields


def test_values_are_read_strictly() -> None:
    age, day, c = parse_field(FIELDS[1]), parse_field(FIELDS[7]), parse_field(CAT)
    assert read_value(age, " 41 ") == 41
    assert read_value(age, "") is MISSING and read_value(age, None) is MISSING
    assert read_value(age, "NA", ["NA"]) is MISSING
    assert read_value(day, "2024-02-29") == "2024-02-29"
    for field, bad in ((age, "4x"), (age, "1_000"), (day, "29/02/2024"), (c, "d"), (c, 1)):
        with pytest.raises(FieldError):
            read_value(field, bad)


def test_rows_are_encoded_as_the_schema_says_and_set_aside_by_policy() -> None:
    schema = {f.name: f for f in parse_fields(FIELDS)}
    index = parse_field({**CAT, "name": "activity", "values": ["low", "medium", "high"]})
    index = parse_field({**index.as_dict(), "encoding": "index"})
    rows = [
        {"activity": "high", "age": 40, "sleep_hours": 8.0, "smoker": True, "rested": True},
        {"activity": None, "age": 30, "sleep_hours": None, "smoker": False, "rested": False},
        {"activity": "low", "age": None, "sleep_hours": 6.0, "smoker": False, "rested": True},
        {"activity": "low", "age": 150, "sleep_hours": 6.0, "smoker": False, "rested": True},
        {"activity": "low", "age": 20, "sleep_hours": 6.0, "smoker": None, "rested": True},
        {"activity": "low", "age": 20, "sleep_hours": 6.0, "smoker": True, "rested": None},
    ]
    encoded = encode_rows(rows, schema, ["activity", "age", "sleep_hours", "smoker"], "rested")
    assert encoded.x.tolist() == [[0, 0, 1, 40, 8, 1], [0, 1, 0, 30, 7, 0]]
    assert encoded.y.tolist() == [1.0, 0.0]
    assert encoded.filled == {"missing:activity": 1, "missing:sleep_hours": 1}
    assert encoded.dropped == {
        "missing:age": 1,
        "invalid:age": 1,
        "missing:smoker": 1,
        "missing:rested": 1,
    }
    as_index = encode_rows(rows[:1], {**schema, "activity": index}, ["activity", "age"], "rested")
    assert as_index.x.tolist() == [[2, 40]]
    days = encode_rows([{"day": "2020-01-11", "rested": True}], schema, ["day"], "rested")
    assert days.x.tolist() == [[(date(2020, 1, 11) - date(1970, 1, 1)).days]]


def test_labels_outside_the_model_are_set_aside_never_trained_on() -> None:
    schema = {f.name: f for f in parse_fields(FIELDS)}
    rows = [{"age": 30, "mood": 1}, {"age": 31, "mood": 9}]
    encoded = encode_rows(
        rows, schema, ["age"], "mood", label_ok=label_domain("cross_entropy", [2])
    )
    assert encoded.y.tolist() == [1.0]
    assert encoded.dropped == {"label_outside_model:mood": 1}
    assert np.all(np.isfinite(encoded.x))


def refusal(spec: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(spec)
    return excinfo.value


def test_a_spec_carrying_its_schema_is_checked_against_its_model() -> None:
    assert validate_spec(sleep_spec()).input_width == WIDTH
    error = refusal(sleep_spec(width=4))
    assert (error.code, error.field) == ("shape_mismatch", "model.layers[0].in_features")
    assert "encode to 6 inputs (activity: one-hot over 3)" in error.message
    error = refusal(sleep_spec(features=["activity", "diary"], width=4))
    assert (error.code, error.field) == ("field_not_trainable", "data.features[1]")
    error = refusal(sleep_spec(label="mood", outputs=2))
    assert (error.code, error.field) == ("label_not_fit", "data.label")
    assert "10 classes" in error.message
    assert validate_spec(sleep_spec(label="mood", outputs=10)).output_shape == (10,)
    error = refusal(sleep_spec(label="diary"))
    assert (error.code, error.field) == ("field_not_trainable", "data.label")
    bce = sleep_spec(label="mood", outputs=1)
    bce["training"]["loss"] = "bce_with_logits"
    error = refusal(bce)
    assert error.code == "label_not_fit" and "0..1" in error.message
    bce = sleep_spec(label="rested", outputs=1)
    bce["training"]["loss"] = "bce_with_logits"
    assert validate_spec(bce).output_shape == (1,)
    mse = sleep_spec(label="activity", features=["age", "sleep_hours", "smoker"], width=3)
    mse["model"]["layers"][-1]["out_features"] = 1
    mse["training"]["loss"] = "mse"
    assert refusal(mse).code == "label_not_fit"


def test_an_embedding_takes_only_index_encoded_features() -> None:
    spec = sleep_spec(features=["activity"], width=3)
    spec["model"]["layers"] = [
        {"type": "embedding", "num_embeddings": 3, "embedding_dim": 4},
        {"type": "flatten"},
        {"type": "linear", "in_features": 12, "out_features": 2},
    ]
    error = refusal(spec)  # one-hot: 3 inputs, not indexable
    assert error.code == "field_not_indexable"
    indexed = copy.deepcopy(spec)
    indexed["data"]["schema"][0] = {**indexed["data"]["schema"][0], "encoding": "index"}
    indexed["model"]["layers"][2]["in_features"] = 4
    assert validate_spec(indexed).input_width == 1


def test_a_schema_must_declare_exactly_the_fields_used() -> None:
    spec = sleep_spec()
    spec["data"]["schema"] = spec["data"]["schema"][:-1]
    error = refusal(spec)
    assert (error.code, error.field) == ("invalid_schema", "data.schema")
    spec = sleep_spec()
    spec["data"]["schema"][0] = {**spec["data"]["schema"][0], "type": "text"}
    assert refusal(spec).field == "data.schema[0].type"
