"""The mask generator: AES-256 in counter mode, keyed by a 256-bit HKDF output.

A cryptographic stream cipher, never a statistical RNG (those can be inverted from outputs).
Word i of a stream is bytes 4i..4i+3 (little-endian) of the keystream AES_k(c) ‖ AES_k(c+1) ‖ …
with c = offset / 4 as a 128-bit big-endian block number, so any coordinate range can be
generated alone (the aggregation shards do).

Speed (DESIGN.md section 5a): the keystream is written with ``update_into`` into one small
reused buffer and added in place in the same step, chunk by chunk, so the chunk of keystream
and the chunk of the vector it is added to stay in the L2 cache; every stream of a vector is
applied to one chunk before the next chunk, and uint32 arithmetic wraps modulo 2^32 for free.
A long vector is cut into contiguous coordinate ranges masked on a few threads at once (the
cipher and numpy's ufuncs release the GIL; each range starts its streams at its own offset), so
the server's unmasking and a pod's masking of a large model use the cores the machine has.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

BLOCK_WORDS = 4  # one AES block is four uint32 coordinates
CHUNK_WORDS = 1 << 15  # 128 KiB of keystream per step: it and the vector's chunk stay in L2
KEY_BYTES = 32
# Keystream words a thread makes at least (4 MiB, ~1 ms): below this, handing a range to a
# thread costs more than it saves.
PARALLEL_MIN_WORDS = 1 << 20
MAX_THREADS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=min(MAX_THREADS, os.cpu_count() or 1), thread_name_prefix="masks"
            )
        return _pool


def _forget_pool() -> None:
    """A forked child (a Celery worker) has none of its parent's threads."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def _parts(length: int, streams: int, threads: int | None) -> int:
    """How many ranges to mask at once: as many as the cores (at most MAX_THREADS) and the
    work (PARALLEL_MIN_WORDS of keystream each) allow, unless ``threads`` says."""
    if threads is None:
        threads = min(MAX_THREADS, os.cpu_count() or 1)
    return max(1, min(threads, length * streams // PARALLEL_MIN_WORDS, length // BLOCK_WORDS))


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
    threads: int | None = None,
) -> None:
    """acc += Σ PRG(k) for k in ``add`` − Σ PRG(k) for k in ``subtract`` (mod 2^32), in place,
    for the coordinates [offset, offset + len(acc)) of each stream. ``threads`` caps the
    ranges masked at once (default: the cores, at most MAX_THREADS; small work stays on the
    calling thread)."""
    _check([*add, *subtract], offset)
    if acc.dtype != np.uint32 or acc.ndim != 1 or not acc.flags.c_contiguous:
        raise ValueError("masks apply to a contiguous one-dimensional uint32 vector")
    if chunk_words < BLOCK_WORDS or chunk_words % BLOCK_WORDS:
        raise ValueError("chunks are positive multiples of four coordinates")
    length = len(acc)
    if length == 0 or not (add or subtract):
        return
    parts = _parts(length, len(add) + len(subtract), threads)
    if parts == 1:
        _apply(acc, add, subtract, offset, chunk_words)
        return
    # Ranges start on AES blocks, so each one's streams start at a block of their own.
    size = -(-length // parts)
    size += (-size) % BLOCK_WORDS
    futures = [
        _threads().submit(
            _apply, acc[start : start + size], add, subtract, offset + start, chunk_words
        )
        for start in range(0, length, size)
    ]
    for future in futures:
        future.result()


def _apply(
    acc: npt.NDArray[np.uint32],
    add: Sequence[bytes],
    subtract: Sequence[bytes],
    offset: int,
    chunk_words: int,
) -> None:
    length = len(acc)
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
