"""Aggregation in shards: masked inputs are summed by coordinate range, streaming from storage
in bounded memory; a partial sum stays masked (masks cancel only in the full total), and the
root removes the remaining masks from each range independently (AES-CTR can start anywhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import crypto
from .errors import SecAggError
from .prg import BLOCK_WORDS, apply_masks

CHUNK_WORDS = 1 << 18  # 1 MiB of uint32 per read


@dataclass
class UnmaskPlan:
    """What mask removal needs: survivors' self-mask seeds and dropped pods' masking keys."""

    round_id: bytes
    survivors: list[int]
    b_seeds: dict[int, bytes] = field(repr=False)
    dropped_keys: dict[int, bytes] = field(repr=False)
    # (alive u, dropped v, u's masking public key): pairwise masks u applied and v never will
    pairs: list[tuple[int, int, bytes]] = field(repr=False)
    # Valued groups: each group's survivors, whose sum is revealed on its own (one group of
    # all survivors when the round is not grouped).
    groups: list[list[int]] = field(default_factory=list)
    # Each of those groups' position in the round's groups (its label), in the same order.
    positions: list[int] = field(default_factory=list)

    def restricted(self, members: list[int]) -> UnmaskPlan:
        """The plan for one group's sum: its survivors' self masks and its own pairwise masks
        (a grouped graph has no edge between groups, so no other mask is in that sum)."""
        inside = set(members)
        pairs = [(u, v, pk) for u, v, pk in self.pairs if u in inside]
        needed = {v for _, v, _ in pairs}
        return UnmaskPlan(
            round_id=self.round_id,
            survivors=[u for u in self.survivors if u in inside],
            b_seeds={u: b for u, b in self.b_seeds.items() if u in inside},
            dropped_keys={v: s for v, s in self.dropped_keys.items() if v in needed},
            pairs=pairs,
            groups=[sorted(inside & set(self.survivors))],
            positions=[],
        )


def shard_ranges(length: int, shards: int) -> list[tuple[int, int]]:
    """Split [0, length) into ranges that start on AES-block boundaries."""
    size = max(BLOCK_WORDS, -(-length // max(1, shards)))
    size += (-size) % BLOCK_WORDS
    return [(start, min(length, start + size)) for start in range(0, length, size)]


def sum_range(sources: Iterable[BinaryIO], start: int, stop: int) -> npt.NDArray[np.uint32]:
    """Σ of coordinates [start, stop) over all sources, reading at most CHUNK_WORDS at a time
    into one reused buffer."""
    length = stop - start
    total = np.zeros(length, dtype=np.uint32)
    buffer = bytearray(4 * min(CHUNK_WORDS, max(1, length)))
    words = np.frombuffer(buffer, dtype="<u4")
    for source in sources:
        source.seek(4 * start)
        position = 0
        while position < length:
            want = min(CHUNK_WORDS, length - position)
            got = _read_into(source, memoryview(buffer)[: 4 * want])
            if got != 4 * want:
                raise SecAggError("A masked input is shorter than the vector.", code="wrong_length")
            part = total[position : position + want]
            np.add(part, words[:want], out=part)
            position += want
    return total


def _read_into(source: BinaryIO, target: memoryview) -> int:
    """Fill ``target`` from ``source``; how many bytes came (fewer only at the end)."""
    readinto = getattr(source, "readinto", None)
    filled = 0
    while filled < len(target):
        if readinto is not None:
            got = readinto(target[filled:])
        else:  # a storage file object without readinto
            data = source.read(len(target) - filled)
            target[filled : filled + len(data)] = data
            got = len(data)
        if not got:
            break
        filled += got
    return filled


def remove_masks(
    partial: npt.NDArray[np.uint32], plan: UnmaskPlan, start: int = 0
) -> npt.NDArray[np.uint32]:
    """Remove survivors' self masks and survivor–dropped pairwise masks from a summed range."""
    out = np.array(partial, dtype=np.uint32)  # a copy, C-contiguous
    add: list[bytes] = []
    subtract = [crypto.self_mask_key(seed, plan.round_id, u) for u, seed in plan.b_seeds.items()]
    dropped = {v: X25519PrivateKey.from_private_bytes(key) for v, key in plan.dropped_keys.items()}
    for u, v, s_pk_u in plan.pairs:
        key = crypto.mask_key(crypto.agree(dropped[v], s_pk_u), plan.round_id, u, v)
        # u added the stream if u < v and subtracted it otherwise; undo what u did.
        (subtract if u < v else add).append(key)
    apply_masks(out, add=add, subtract=subtract, offset=start)
    return out
