"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Python integers do the arithmetic; one split or combine costs about a millisecond. The share
of pod u is the polynomial at x = u (its 1-based index in the round).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from .errors import SecAggError

PRIME = 2**521 - 1
SECRET_BYTES = 32


def split(secret: bytes, threshold: int, xs: Iterable[int]) -> dict[int, int]:
    """Shares of ``secret`` at each x: any ``threshold`` recover it, fewer reveal nothing."""
    if len(secret) != SECRET_BYTES:
        raise SecAggError("Shamir shares 32-byte secrets.", code="invalid_secret")
    points = list(xs)
    if (
        threshold < 1
        or threshold > len(points)
        or len(set(points)) != len(points)
        or min(points) < 1
    ):
        raise SecAggError("Invalid threshold or share points.", code="invalid_threshold")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares: dict[int, int] = {}
    for x in points:
        acc = 0
        for c in reversed(coefficients):
            acc = (acc * x + c) % PRIME
        shares[x] = acc
    return shares


def combine(shares: Mapping[int, int]) -> bytes:
    """Lagrange interpolation at 0 from exactly the shares given (at least the threshold)."""
    if not shares:
        raise SecAggError("No shares to combine.", code="invalid_shares")
    xs = list(shares)
    secret = 0
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + shares[xi] * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise SecAggError("The shares do not combine to a secret.", code="invalid_shares")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_bytes(value: int) -> bytes:
    return value.to_bytes(66, "big")


def share_from_bytes(data: bytes) -> int:
    if len(data) != 66:
        raise SecAggError("A share is 66 bytes.", code="invalid_shares")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise SecAggError("A share is out of the field.", code="invalid_shares")
    return value
