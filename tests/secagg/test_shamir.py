from __future__ import annotations

import contextlib
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.secagg.errors import SecAggError
from training.secagg.shamir import combine, split


@settings(max_examples=30)
@given(st.binary(min_size=32, max_size=32), st.integers(2, 8), st.data())
def test_any_t_shares_recover_the_secret(secret: bytes, t: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(t, 12))
    shares = split(secret, t, range(1, n + 1))
    chosen = data.draw(
        st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=t, unique=True)
    )
    assert combine({x: shares[x] for x in chosen}) == secret


def test_fewer_than_t_shares_do_not_recover_it() -> None:
    secret = os.urandom(32)
    shares = split(secret, 4, range(1, 8))
    for subset in itertools.combinations(shares, 3):
        with contextlib.suppress(SecAggError):  # an out-of-range result is refused outright
            assert combine({x: shares[x] for x in subset}) != secret


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SecAggError):
        split(b"short", 2, [1, 2])
    with pytest.raises(SecAggError):
        split(os.urandom(32), 3, [1, 2])
    with pytest.raises(SecAggError):
        split(os.urandom(32), 2, [1, 1, 2])
