"""The bounded map the caches of both cores and the server share, and the shared L2 norm."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.shared.kept import Kept
from training.shared.numeric import l2_norm


def test_the_least_recently_used_entry_goes_first() -> None:
    kept: Kept[str, int] = Kept(2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # a is now the most recent
    kept.put("c", 3)
    assert kept.get("b") is None and kept.get("a") == 1 and kept.get("c") == 3
    assert len(kept) == 2


def test_a_weight_bound_drops_the_oldest_until_the_rest_fit() -> None:
    kept: Kept[str, bytes] = Kept(10, weight=10, weigh=len)
    kept.put("a", b"1234")
    kept.put("b", b"1234")
    kept.put("c", b"1234")  # 12 > 10: a goes
    assert kept.get("a") is None and kept.get("b") and kept.get("c")
    kept.put("b", b"1")  # replacing an entry counts its new weight only
    kept.put("d", b"12345")
    assert kept.get("c") and kept.get("d") and kept.get("b")
    kept.put("e", b"x" * 50)  # heavier than the bound: kept alone
    assert len(kept) == 1 and kept.get("e")


def test_find_returns_the_most_recent_match() -> None:
    kept: Kept[tuple[str, str], int] = Kept(4)
    kept.put(("x", "h1"), 1)
    kept.put(("y", "h1"), 2)
    kept.put(("z", "h2"), 3)
    assert kept.find(lambda key: key[1] == "h1") == 2
    assert kept.find(lambda key: key[1] == "h3") is None


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Kept(0)
    with pytest.raises(ValueError, match="weigh"):
        Kept(3, weight=10)


def test_threads_sharing_it_never_see_more_than_its_bound() -> None:
    kept: Kept[int, int] = Kept(8)
    seen: list[int] = []

    def work(offset: int) -> None:
        for i in range(2000):
            kept.put(offset + i % 20, i)
            kept.get(offset + (i * 7) % 20)
            seen.append(len(kept))

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(seen) <= 8 and len(kept) == 8


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=300))
def test_l2_norm_is_numpys_norm_in_float64(values: list[float]) -> None:
    vector = np.array(values, dtype=np.float32)
    assert l2_norm(vector) == pytest.approx(np.linalg.norm(vector.astype(np.float64)), rel=1e-12)
