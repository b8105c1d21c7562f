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


@pytest.mark.parametrize("opener", ["[", "{"])
def test_the_depth_limit_holds_at_its_edge_whichever_bracket(opener: str) -> None:
    """At most ``max_depth`` levels parse; one more is refused, with or without other brackets
    around it (the bracket count only spares texts that cannot be too deep)."""
    closer = {"[": "]", "{": "}"}[opener]

    def nested(levels: int) -> str:
        inner = "1"
        for _ in range(levels):
            inner = f"{opener}{inner}{closer}" if opener == "[" else f'{{"k": {inner}}}'
        return inner

    limit = safejson.MAX_DEPTH
    assert safejson.loads(nested(limit)) == json.loads(nested(limit))
    for text in (nested(limit + 1), f'[{nested(limit)}, "[[[["]', f"[{nested(limit)}]"):
        with pytest.raises(safejson.UnsafeJson) as caught:
            safejson.loads(text)
        assert caught.value.code == "json_too_deep"
    shallow = json.dumps([[1]] * 200)  # many brackets, depth 2: counted, scanned, accepted
    assert safejson.loads(shallow) == json.loads(shallow)


def test_a_nul_is_refused_however_it_is_written_and_only_a_nul() -> None:
    """A NUL can only come from the escape (json.loads refuses a raw control character), so a
    shallow text without the escape is not walked again; one with it is."""
    with pytest.raises(safejson.UnsafeJson) as raw:
        safejson.loads('{"a": "x\x00y"}')
    assert raw.value.code == "json_malformed"
    for text in ('{"a": "x\\u0000y"}', '["\\u0000"]', '{"\\u0000": 1}'):
        with pytest.raises(safejson.UnsafeJson) as escaped:
            safejson.loads(text)
        assert escaped.value.code == "json_nul"
    # A backslash, then "u0000": text that looks like the escape and holds no NUL.
    assert safejson.loads('{"a": "\\\\u0000"}') == {"a": "\\u0000"}
