"""A Merkle tree over leaf hashes, as RFC 9162 §2.1 (Certificate Transparency v2) defines it.

Hashing is §2.1.1: SHA-256, leaf hash ``H(0x00 || leaf)``, node hash ``H(0x01 || left || right)``,
the tree over ``n`` leaves split at the largest power of two smaller than ``n``. Proof generation
follows §2.1.3.1 (PATH) and §2.1.4.1 (PROOF/SUBPROOF); verification follows §2.1.3.2 and §2.1.4.2
step by step.

Generic: it knows leaf hashes, never what a leaf holds. :mod:`pods.agent.keylog` builds the key
log on it (entries, signed tree heads, the pod's verifier) and turns a failed proof into its
error codes. The checks here answer only *whether* a proof holds, never which hash differed.
Pure (no Django), typed strictly; the service builds trees and proofs with it, the pod verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
MAX_PATH = 64  # a tree of 2^64 leaves needs 64 hashes; anything longer is junk


# -- RFC 9162 §2.1.1 hashing -----------------------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = HASH()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1), where §2.1.1 splits the tree."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """The leaf hashes of a log plus every complete, aligned subtree hash (for fast proofs).

    ``levels[h][i]`` is the hash of leaves ``[i * 2^h, (i + 1) * 2^h)``; only complete blocks
    are kept, so appending costs O(log n) and every node of the RFC 9162 tree over any prefix
    is either such a block or one of the O(log n) right-edge nodes, computed on demand.
    """

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for value in leaf_hashes:
            self.append(value)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, value: bytes) -> None:
        if len(value) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        self.levels[0].append(value)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            if len(self.levels) == level + 1:
                self.levels.append([])
            row = self.levels[level]
            self.levels[level + 1].append(node_hash(row[-2], row[-1]))
            level += 1

    def leaf(self, index: int) -> bytes:
        return self.levels[0][index]

    def _mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a node of the tree (``start`` aligned as §2.1.1 splits)."""
        count = end - start
        if count == 0:
            return EMPTY_ROOT
        height = count.bit_length() - 1
        if count == 1 << height and start % count == 0:
            return self.levels[height][start >> height]
        k = _split(count)
        return node_hash(self._mth(start, start + k), self._mth(start + k, end))

    def _check_size(self, tree_size: int) -> None:
        if not 0 <= tree_size <= self.size:
            raise ValueError("tree size outside the log")

    def root(self, tree_size: int | None = None) -> bytes:
        size = self.size if tree_size is None else tree_size
        self._check_size(size)
        return self._mth(0, size)

    def inclusion_path(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) of RFC 9162 §2.1.3.1, leaf first."""
        size = self.size if tree_size is None else tree_size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError("leaf index outside the tree")
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self._mth(start + k, end))
                end = start + k
            else:
                path.append(self._mth(start, start + k))
                start, m = start + k, m - k
        path.reverse()
        return path

    def consistency_path(self, first: int, second: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 (empty when ``first`` is 0 or equals ``second``)."""
        size = self.size if second is None else second
        self._check_size(size)
        if not 0 <= first <= size:
            raise ValueError("first tree size outside the log")
        if first == 0 or first == size:
            return []
        path: list[bytes] = []
        start, end, m, whole = 0, size, first, True
        while True:
            n = end - start
            if m == n:
                if not whole:
                    path.append(self._mth(start, end))
                break
            k = _split(n)
            if m <= k:
                path.append(self._mth(start + k, end))
                end = start + k
            else:
                path.append(self._mth(start, start + k))
                start, m, whole = start + k, m - k, False
        path.reverse()
        return path


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    return MerkleTree(leaf_hashes).root()


# -- RFC 9162 §2.1.3.2 and §2.1.4.2 verification ---------------------------------------------------


def is_included(
    leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether the leaf hash ``leaf`` sits at ``index`` of the tree of ``tree_size`` leaves."""
    if not 0 <= index < tree_size or len(path) > MAX_PATH:
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def is_consistent(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """Whether the tree of ``second`` leaves extends the tree of ``first`` leaves."""
    if not 0 <= first <= second or len(path) > MAX_PATH:
        return False
    if first == 0:
        return True  # every tree extends the empty one
    if first == second:
        return not path and first_root == second_root
    if not path:
        return False
    nodes = list(path)
    if first & (first - 1) == 0:
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
