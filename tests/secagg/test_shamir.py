from __future__ import annotations

import contextlib
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.secagg.errors import SecAggError
from training.secagg.shamir import PRIME, combine, split


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


def _textbook(shares: dict[int, int]) -> int:
    """Lagrange at 0 with one inversion per share: the reference the batch inversion must equal."""
    total = 0
    for xi, yi in shares.items():
        num = den = 1
        for xj in shares:
            if xj != xi:
                num, den = num * -xj % PRIME, den * (xi - xj) % PRIME
        total += yi * num * pow(den, -1, PRIME)
    return total % PRIME


@settings(max_examples=40)
@given(
    st.binary(min_size=32, max_size=32),
    st.lists(st.integers(1, 100_000), min_size=1, max_size=40, unique=True),
    st.data(),
)
def test_combine_equals_textbook_interpolation_at_large_points(
    secret: bytes, xs: list[int], data: st.DataObject
) -> None:
    """Round indices run to the cohort size: points far apart, thresholds up to 40."""
    t = data.draw(st.integers(1, len(xs)))
    shares = split(secret, t, xs)
    chosen = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=len(xs), unique=True))
    subset = {x: shares[x] for x in chosen}
    assert combine(subset) == secret
    # Values that are no sharing of a 32-byte secret interpolate the same way (or are refused).
    noise = {x: data.draw(st.integers(0, PRIME - 1)) for x in chosen}
    expected = _textbook(noise)
    if expected < 2**256:
        assert int.from_bytes(combine(noise), "big") == expected
    else:
        with pytest.raises(SecAggError):
            combine(noise)
