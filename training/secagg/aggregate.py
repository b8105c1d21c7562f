"""Aggregation in shards: masked inputs are summed by coordinate range, streaming from storage
in bounded memory; a partial sum stays masked (masks cancel only in the full total), and the
root removes the remaining masks from each range independently (AES-CTR can start anywhere).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import crypto
from .errors import SecAggError
from .prg import BLOCK_WORDS, MaskStreams
from .server import UnmaskPlan

CHUNK_WORDS = 1 << 18  # 1 MiB of uint32 per read


def shard_ranges(length: int, shards: int) -> list[tuple[int, int]]:
    """Split [0, length) into ranges that start on AES-block boundaries."""
    size = max(BLOCK_WORDS, -(-length // max(1, shards)))
    size += (-size) % BLOCK_WORDS
    return [(start, min(length, start + size)) for start in range(0, length, size)]


def sum_range(sources: Iterable[BinaryIO], start: int, stop: int) -> npt.NDArray[np.uint32]:
    """Σ of coordinates [start, stop) over all sources, reading at most CHUNK_WORDS at a time."""
    total = np.zeros(stop - start, dtype=np.uint32)
    for source in sources:
        source.seek(4 * start)
        position = 0
        while position < stop - start:
            want = min(CHUNK_WORDS, stop - start - position)
            chunk = source.read(4 * want)
            if len(chunk) != 4 * want:
                raise SecAggError("A masked input is shorter than the vector.", code="wrong_length")
            np.add(
                total[position : position + want],
                np.frombuffer(chunk, dtype="<u4"),
                out=total[position : position + want],
            )
            position += want
    return total


def remove_masks(
    partial: npt.NDArray[np.uint32], plan: UnmaskPlan, start: int = 0
) -> npt.NDArray[np.uint32]:
    """Remove survivors' self masks and survivor–dropped pairwise masks from a summed range."""
    out = partial.copy()
    streams = MaskStreams(len(out))
    for u, seed in plan.b_seeds.items():
        streams.subtract(out, crypto.self_mask_key(seed, plan.round_id, u), start)
    for u, v, s_pk_u in plan.pairs:
        shared = crypto.agree(X25519PrivateKey.from_private_bytes(plan.dropped_keys[v]), s_pk_u)
        key = crypto.mask_key(shared, plan.round_id, u, v)
        # u added the stream if u < v and subtracted it otherwise; undo what u did.
        if u < v:
            streams.subtract(out, key, start)
        else:
            streams.add(out, key, start)
    return out
