"""Index lists: the fast path for plain ints accepts and refuses exactly what the
element-by-element check does."""

from __future__ import annotations

from typing import Any

import pytest

from training.secagg.errors import ProtocolError
from training.secagg.wire import index, index_list


def one_by_one(value: list[Any]) -> list[int] | None:
    try:
        out = [index(v, "f") for v in value]
    except ProtocolError:
        return None
    return out if len(set(out)) == len(out) else None


@pytest.mark.parametrize(
    "value",
    [
        [],
        [1, 2, 3],
        list(range(1, 1001)),
        [0, 1],
        [2**31 - 1],
        [2**31],
        [-5, 3],
        [True, 2],
        [1, False],
        ["3", 4],
        ["x"],
        [1.0, 2],
        [None],
        [3, 3],
        [3, "3"],
        [[1]],
    ],
)
def test_index_list_refuses_what_index_refuses(value: list[Any]) -> None:
    expected = one_by_one(value)
    if expected is None:
        with pytest.raises(ProtocolError):
            index_list(value, "f")
    else:
        assert index_list(value, "f") == expected


def test_index_list_copies() -> None:
    value = [1, 2]
    out = index_list(value, "f")
    out.append(3)
    assert value == [1, 2]
