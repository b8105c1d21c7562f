"""The neighbour graph: a random k-regular (Harary) graph, as in SecAgg+ (Bell et al. 2020).

Pods are placed on a ring in a random order drawn from a seed; each is joined to its k/2
nearest pods on either side. k grows as O(log n) — here k = 2·ceil(1.5·log2 n), at least 4 —
and a small cohort (n ≤ k + 1) gets the complete graph. The threshold t is a strict majority of
a neighbourhood and at least the request's fraction of it: t = max(floor(k/2) + 1, ceil(f·k)).
Bell et al. show that with such k an honest-but-curious server with a bounded fraction of
corrupted pods learns nothing beyond the sum except with probability 2^-σ (σ ≈ 40 here).
"""

from __future__ import annotations

import math
import random


def choose_k(n: int) -> int:
    if n < 2:
        raise ValueError("a cohort has at least two pods")
    k = max(4, 2 * math.ceil(1.5 * math.log2(n)))
    return n - 1 if n <= k + 1 else k


def choose_t(k: int, fraction: float) -> int:
    return min(k, max(k // 2 + 1, math.ceil(fraction * k)))


def neighbours(indices: list[int], k: int, seed: bytes) -> dict[int, list[int]]:
    """Each index's k neighbours (symmetric), deterministic from ``seed``."""
    n = len(indices)
    if n <= k + 1:
        return {u: sorted(v for v in indices if v != u) for u in indices}
    if k % 2:
        raise ValueError("k must be even when the graph is not complete")
    ring = sorted(indices)
    random.Random(seed).shuffle(ring)
    position = {u: i for i, u in enumerate(ring)}
    out: dict[int, list[int]] = {}
    for u in indices:
        i = position[u]
        out[u] = sorted({ring[(i + d) % n] for d in range(-(k // 2), k // 2 + 1) if d})
    return out
