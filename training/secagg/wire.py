"""Message fields as JSON: bytes as base64, indices as positive ints, validated on the way in."""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Mapping
from typing import Any

from .errors import ProtocolError


class Stage(enum.Enum):
    """The SecAgg stages (Bonawitz et al. 2017, Figure 4, with its ConsistencyCheck), in order."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY_CHECK = "consistency_check"  # Bonawitz et al. 2017, round 3
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


ORDER = [
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
    Stage.DONE,
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, field: str, *, size: int | None = None, max_size: int = 4096) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * max_size:
        raise ProtocolError(f"{field} must be base64 text.", code="malformed_message")
    try:
        # Strict: only the alphabet, padding only at the end and only as much as needed (what
        # base64.b64decode(validate=True) checks with a regular expression, here in C).
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{field} is not valid base64.", code="malformed_message") from None
    if (size is not None and len(data) != size) or len(data) > max_size:
        raise ProtocolError(f"{field} has the wrong length.", code="malformed_message")
    return data


def index(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        raise ProtocolError(f"{field} must be a positive index.", code="malformed_message")
    return int(value)


def index_list(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or len(value) > 100_000:
        raise ProtocolError(f"{field} must be a list of indices.", code="malformed_message")
    if set(map(type, value)) <= {int}:
        # Plain ints (the usual case: a thousand-pod round's member list): checked by builtins,
        # as :func:`index` would one by one.
        if value and (min(value) < 1 or max(value) >= 2**31):
            raise ProtocolError(f"{field} must be a positive index.", code="malformed_message")
        out = list(value)
    else:
        out = [index(v, field) for v in value]
    if len(set(out)) != len(out):
        raise ProtocolError(f"{field} lists an index twice.", code="malformed_message")
    return out


def index_map(value: Any, field: str) -> dict[int, Any]:
    if not isinstance(value, Mapping) or len(value) > 100_000:
        raise ProtocolError(f"{field} must be an object keyed by index.", code="malformed_message")
    return {index(k, field): v for k, v in value.items()}


def expect_stage(message: Any, stage: Stage) -> Mapping[str, Any]:
    if not isinstance(message, Mapping) or message.get("stage") != stage.value:
        raise ProtocolError(f"Expected a {stage.value} message.", code="out_of_order")
    return message
