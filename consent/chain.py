"""The consent log's hash chain: how an event's hash is computed and how a chain is verified."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pods.agent.protocol import canonical_json

from .models import GENESIS_HASH, ConsentEvent

# Event types that set a consent's status, and the status each sets; the last one must agree
# with the consent row. A renewal keeps (or makes) the consent given.
STATUS_EVENTS = {
    "given": "given",
    "renewed": "given",
    "refused": "refused",
    "withdrawn": "withdrawn",
    "expired": "expired",
}


def event_digest(
    *,
    consent_id: str,
    seq: int,
    event_type: str,
    at: datetime,
    actor: str,
    method: str,
    notice_hash: str,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 over the event's content and the previous event's hash (canonical JSON)."""
    payload = {
        "consent": consent_id,
        "seq": seq,
        "type": event_type,
        "at": at.isoformat(timespec="microseconds"),
        "actor": actor,
        "method": method,
        "notice_hash": notice_hash,
        "detail": detail,
        "prev": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def digest_of(event: ConsentEvent) -> str:
    return event_digest(
        consent_id=str(event.consent_id),
        seq=event.seq,
        event_type=event.event_type,
        at=event.at,
        actor=event.actor,
        method=event.method,
        notice_hash=event.notice_hash,
        detail=event.detail,
        prev_hash=event.prev_hash,
    )


@dataclass(frozen=True)
class ChainBreak:
    consent_id: str
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"event #{self.seq}" if self.seq is not None else "chain"
        return f"consent {self.consent_id}, {where}: {self.problem}"


def verify_chain(consent_id: str, status: str, events: Iterable[ConsentEvent]) -> list[ChainBreak]:
    breaks: list[ChainBreak] = []
    expected_prev = GENESIS_HASH
    expected_seq = 1
    last_status: str | None = None
    for event in events:
        if event.seq != expected_seq:
            breaks.append(ChainBreak(consent_id, event.seq, f"expected event #{expected_seq}"))
        if event.prev_hash != expected_prev:
            breaks.append(ChainBreak(consent_id, event.seq, "link to the previous event broken"))
        if digest_of(event) != event.hash:
            breaks.append(ChainBreak(consent_id, event.seq, "content does not match its hash"))
        if event.event_type in STATUS_EVENTS:
            last_status = STATUS_EVENTS[event.event_type]
        expected_prev = event.hash
        expected_seq = event.seq + 1
    if expected_seq == 1:
        breaks.append(ChainBreak(consent_id, None, "no events recorded"))
    elif last_status != status:
        breaks.append(
            ChainBreak(
                consent_id, None, f"status {status!r} disagrees with the log ({last_status!r})"
            )
        )
    return breaks
