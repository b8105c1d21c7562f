from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training.secagg.encoding import Layout, Segment, clip_l2, decode, encode, scale_bits


@given(st.integers(1, 100_000), st.floats(1e-3, 1e4))
def test_scale_never_lets_the_sum_wrap(clients: int, bound: float) -> None:
    bits = scale_bits(clients, bound)
    assert clients * (bound * 2**bits + 1) < 2**31


@given(
    arrays(np.float64, st.integers(1, 50), elements=st.floats(-2.0, 2.0)),
    st.integers(0, 2**32 - 1),
)
def test_encode_decode_is_within_one_step_and_clamps(values: np.ndarray, seed: int) -> None:
    segment = Segment("update", len(values), 1.0, scale_bits(100, 1.0))
    layout = Layout((segment,))
    q = encode(values, segment, np.random.default_rng(seed))
    back = decode(q, layout)["update"]
    clamped = np.clip(values, -1.0, 1.0)
    assert np.all(np.abs(back - clamped) <= 2.0**-segment.bits)


def test_zero_encodes_to_zero_for_any_cohort() -> None:
    for clients in (2, 100, 10_000):
        segment = Segment("update", 8, 1.0, scale_bits(clients, 1.0))
        assert not encode(np.zeros(8), segment, np.random.default_rng(0)).any()


def test_negative_sums_decode_in_twos_complement() -> None:
    segment = Segment("update", 3, 1.0, 10)
    total = sum(
        encode(np.array([-0.5, 0.25, -1.0]), segment, np.random.default_rng(i)) for i in range(7)
    )
    assert np.allclose(
        decode(total.astype(np.uint32), Layout((segment,)))["update"], [-3.5, 1.75, -7.0]
    )


def test_stochastic_rounding_is_unbiased() -> None:
    segment = Segment("update", 200_000, 1.0, 2)
    q = encode(np.full(200_000, 0.1), segment, np.random.default_rng(1))
    assert abs(q.view(np.int32).mean() / 4 - 0.1) < 0.005


@settings(max_examples=50)
@given(
    arrays(np.float32, st.integers(1, 30), elements=st.floats(-10, 10, width=32)), st.floats(0.1, 5)
)
# A norm between the float32 and the float64 value of |v|: the float64 one decides.
@example(np.array([1.255319], dtype=np.float32), 1.2553189415183148)
def test_clip_bounds_the_norm(vector: np.ndarray, norm: float) -> None:
    clipped = clip_l2(vector, norm)
    assert np.linalg.norm(clipped.astype(np.float64)) <= norm * (1 + 1e-5)
    # clip_l2 measures in float64; a float32 norm can round across the bound.
    if np.linalg.norm(vector.astype(np.float64)) <= norm:
        assert np.array_equal(clipped, vector)
