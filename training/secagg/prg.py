"""The mask generator: AES-256 in counter mode, keyed by a 256-bit HKDF output.

A cryptographic stream cipher, never a statistical RNG (those can be inverted from outputs).
Word i of a stream is bytes 4i..4i+3 (little-endian) of the keystream AES_k(c) ‖ AES_k(c+1) ‖ …
with c = offset / 4 as a 128-bit big-endian block number, so any coordinate range can be
generated alone (the aggregation shards do).

Speed (DESIGN.md section 5a): the keystream is written with ``update_into`` into one small
reused buffer and added in place in the same step, chunk by chunk, so the chunk of keystream
and the chunk of the vector it is added to stay in the L2 cache; every stream of a vector is
applied to one chunk before the next chunk, and uint32 arithmetic wraps modulo 2^32 for free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

BLOCK_WORDS = 4  # one AES block is four uint32 coordinates
CHUNK_WORDS = 1 << 15  # 128 KiB of keystream per step: it and the vector's chunk stay in L2
KEY_BYTES = 32


def _check(keys: Sequence[bytes], offset: int) -> None:
    if any(len(key) != KEY_BYTES for key in keys):
        raise ValueError("mask keys are 32 bytes")
    if offset < 0 or offset % BLOCK_WORDS:
        raise ValueError("offsets are non-negative multiples of four coordinates")


def _keystream(key: bytes, offset: int) -> CipherContext:
    counter = (offset // BLOCK_WORDS).to_bytes(16, "big")
    return Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()


def apply_masks(
    acc: npt.NDArray[np.uint32],
    *,
    add: Sequence[bytes] = (),
    subtract: Sequence[bytes] = (),
    offset: int = 0,
    chunk_words: int = CHUNK_WORDS,
) -> None:
    """acc += Σ PRG(k) for k in ``add`` − Σ PRG(k) for k in ``subtract`` (mod 2^32), in place,
    for the coordinates [offset, offset + len(acc)) of each stream."""
    _check([*add, *subtract], offset)
    if acc.dtype != np.uint32 or acc.ndim != 1 or not acc.flags.c_contiguous:
        raise ValueError("masks apply to a contiguous one-dimensional uint32 vector")
    if chunk_words < BLOCK_WORDS or chunk_words % BLOCK_WORDS:
        raise ValueError("chunks are positive multiples of four coordinates")
    length = len(acc)
    if length == 0 or not (add or subtract):
        return
    chunk = min(chunk_words, length)
    streams: list[tuple[CipherContext, np.ufunc]] = [
        (_keystream(key, offset), np.add) for key in add
    ]
    streams += [(_keystream(key, offset), np.subtract) for key in subtract]
    zeros = bytes(4 * chunk)
    buffer = bytearray(4 * chunk + 15)  # update_into wants room for a block more than it writes
    words: npt.NDArray[np.uint32] = np.frombuffer(buffer, dtype=np.uint32, count=chunk)
    for start in range(0, length, chunk):
        size = min(chunk, length - start)
        # Only the last chunk can be shorter (and end inside a block): each stream ends there.
        source = zeros if size == chunk else memoryview(zeros)[: 4 * size]
        stream = words if size == chunk else words[:size]
        part = acc[start : start + size]
        for encryptor, operation in streams:
            encryptor.update_into(source, buffer)
            operation(part, stream, out=part)


def mask_stream(key: bytes, length: int, offset: int = 0) -> npt.NDArray[np.uint32]:
    """The stream itself for coordinates [offset, offset + length) (tests and tools)."""
    out = np.zeros(length, dtype=np.uint32)
    apply_masks(out, add=[key], offset=offset)
    return out
