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


def neighbours_of(indices: list[int], k: int, seed: bytes, u: int) -> list[int]:
    """One index's neighbours in :func:`neighbours` (a pod recomputes only its own: O(n))."""
    n = len(indices)
    if n <= k + 1:
        return sorted(v for v in indices if v != u)
    if k % 2:
        raise ValueError("k must be even when the graph is not complete")
    ring = sorted(indices)
    random.Random(seed).shuffle(ring)
    i = ring.index(u)
    return sorted({ring[(i + d) % n] for d in range(-(k // 2), k // 2 + 1) if d})


def grouped_neighbours(
    groups: list[list[int]], fraction: float, seed: bytes, k: int | None = None
) -> tuple[dict[int, list[int]], list[tuple[int, int]]]:
    """One Harary graph per group, disjoint: every pairwise mask stays inside its group, so
    once the usual masks are removed the sum of a group's inputs is that group's plain sum —
    one SecAgg+ instance reveals G separate sums and nothing finer (issue 16, group value).

    Returns the neighbours and each group's (k, t); each group's ring order is drawn from
    ``seed`` and the group's position."""
    out: dict[int, list[int]] = {}
    sizes: list[tuple[int, int]] = []
    seen: set[int] = set()
    for position, members in enumerate(groups):
        if len(members) < 2 or seen & set(members):
            raise ValueError("groups are disjoint and have at least two pods each")
        seen |= set(members)
        k_g = min(k, len(members) - 1) if k is not None else choose_k(len(members))
        if k_g % 2 and len(members) > k_g + 1:
            k_g -= 1
        out.update(neighbours(sorted(members), k_g, seed + position.to_bytes(2, "big")))
        sizes.append((k_g, choose_t(k_g, fraction)))
    return out, sizes
