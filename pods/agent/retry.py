"""Retrying a round's HTTP calls (the weights, a receipt, a masked input over HTTP) while they
fail for a passing reason: a web process restarting, a proxy's 502."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

# Retrying a failed HTTP call of a round (a web process restarting, a proxy's 502): capped
# exponential back-off with jitter, at most RETRY_ATTEMPTS calls, never past the stage deadline.
# The attempts outlast a default 60 s stage, so the deadline is what ends them: a web process
# restarted by its supervisor on a loaded host took ~25 s to answer again (tests/chaos), longer
# than 8 attempts lasted. The short cap keeps a pod at most 4 s behind a process that is back.
RETRY_ATTEMPTS = 20
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 4.0
# Error codes that say "try again": the network failed, or the answer was no service's (a
# gateway's HTML page). Every other code is the service's decision, and final.
TRANSIENT_CODES = frozenset({"http_error"})


def transient(exc: Exception) -> bool:
    """Whether a transport failure may pass: anything but an error the service decided."""
    code = getattr(exc, "code", None)
    return not isinstance(code, str) or code in TRANSIENT_CODES


class TransportFailed(Exception):
    """An HTTP call of a round failed; the message is the service's error code."""


def with_retries(
    call: Callable[..., Any],
    *arguments: Any,
    rng: random.Random,
    now: Callable[[], datetime],
    deadline: datetime | None,
    sleep: Callable[[float], None],
    on_event: Callable[[dict[str, Any]], object],
) -> Any:
    """``call(*arguments)``, retried while it fails for a passing reason (the network, a
    gateway) with capped, jittered exponential back-off, the same arguments each time, at most
    :data:`RETRY_ATTEMPTS` times and never past ``deadline``; a failure that remains (or a
    refusal by the service) becomes :class:`TransportFailed`."""
    delay = RETRY_FIRST_DELAY
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call(*arguments)
        except Exception as exc:  # the transport's own errors (HTTP status, network)
            code = str(getattr(exc, "code", exc.__class__.__name__))
            wait = rng.uniform(delay / 2, delay)
            if (
                not transient(exc)
                or attempt == RETRY_ATTEMPTS
                or (deadline is not None and now() + timedelta(seconds=wait) >= deadline)
            ):
                raise TransportFailed(code) from None
            on_event({"event": "retry", "code": code, "attempt": attempt})
            sleep(wait)
            delay = min(delay * 2, RETRY_MAX_DELAY)
    raise AssertionError("unreachable")  # pragma: no cover
