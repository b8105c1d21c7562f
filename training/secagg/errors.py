"""Errors with stable codes. None of them carries a key, share, seed or vector."""

from __future__ import annotations


class SecAggError(Exception):
    code = "secagg_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class CryptoError(SecAggError):
    """Every failed decryption or signature check: one opaque error (no oracle)."""

    code = "crypto_failure"

    def __init__(self) -> None:
        super().__init__("A cryptographic check failed.")


class ProtocolError(SecAggError):
    """A message out of order, malformed, or against the protocol's rules."""

    code = "protocol_violation"


class AbortError(SecAggError):
    """Too few pods left to finish safely: the round reveals nothing."""

    code = "below_threshold"


class FloorError(ProtocolError):
    """The service asked for less protection than the plan the pod's owner agreed to (a smaller
    neighbourhood or threshold, too few survivors): the pod declines and reveals nothing more."""

    code = "below_plan_floor"


class SurvivorsBelowFloor(FloorError, AbortError):
    """An unmask request naming fewer surviving neighbours than the threshold: the round cannot
    finish safely (an abort), and the pod says why (a decline)."""

    code = "survivors_below_threshold"
