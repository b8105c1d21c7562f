"""The mask generator: AES-256 in counter mode, keyed by a 256-bit HKDF output.

A cryptographic stream cipher, never a statistical RNG (those can be inverted from outputs).
Streams are written with ``update_into`` into preallocated buffers and added in place; uint32
arithmetic wraps modulo 2^32 for free (DESIGN.md section 5a).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_WORDS = 4  # one AES block is four uint32 coordinates


class MaskStreams:
    """Reusable buffers for generating many mask streams of one length."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._zeros = bytes(4 * length)
        self._buffer = bytearray(4 * length + 15)
        self._view: npt.NDArray[np.uint32] = np.frombuffer(
            self._buffer, dtype=np.uint32, count=length
        )

    def stream(self, key: bytes, offset: int = 0) -> npt.NDArray[np.uint32]:
        """The keystream for coordinates [offset, offset + length) (a view: copy to keep it)."""
        if len(key) != 32:
            raise ValueError("mask keys are 32 bytes")
        if offset % BLOCK_WORDS:
            raise ValueError("offsets are multiples of four coordinates")
        counter = (offset // BLOCK_WORDS).to_bytes(16, "big")
        encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        return self._view

    def add(self, acc: npt.NDArray[np.uint32], key: bytes, offset: int = 0) -> None:
        np.add(acc, self.stream(key, offset), out=acc)

    def subtract(self, acc: npt.NDArray[np.uint32], key: bytes, offset: int = 0) -> None:
        np.subtract(acc, self.stream(key, offset), out=acc)


def mask_stream(key: bytes, length: int, offset: int = 0) -> npt.NDArray[np.uint32]:
    return MaskStreams(length).stream(key, offset).copy()
