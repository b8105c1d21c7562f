"""The one strict JSON reader (training.modelspec.safejson): codes, depth, NUL, numbers."""

from __future__ import annotations

import json

import pytest

from training.modelspec import safejson

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (DEEP, "json_too_deep"),
        ('{"a": ' * 65 + "1" + "}" * 65, "json_too_deep"),
        ('{"title": "a\\u0000b"}', "json_nul"),
        ('{"a\\u0000": 1}', "json_nul"),
        ('[{"k": ["x", "\\u0000"]}]', "json_nul"),
        ("[NaN]", "json_malformed"),
        ("1" * 5000, "json_malformed"),
        ('{"a": ', "json_malformed"),
        (b"\xff\xfe", "json_malformed"),
    ],
)
def test_safejson_refuses_with_a_stable_code(text: str | bytes, code: str) -> None:
    with pytest.raises(safejson.UnsafeJson) as caught:
        safejson.loads(text)
    assert caught.value.code == code
    assert isinstance(caught.value, ValueError)  # old `except ValueError` paths still catch it


def test_safejson_counts_brackets_inside_strings_as_text() -> None:
    text = json.dumps({"a": "[" * 500 + '"\\' + "{" * 500})
    assert safejson.loads(text) == json.loads(text)
    assert safejson.nesting_depth('{"a": [1, {"b": "]]]"}]}') == 3
