"""``dataspace-pod audit``: does the key log show keys claiming my person that they did not pair?

The pod fetches the service's current signed tree head and checks it extends the head it kept
(RFC 9162 §2.1.4), then every entry the service lists under its owner's account, each with an
inclusion proof under that head (§2.1.3) and an account commitment that only this person's
pseudonym opens. Its own entry must be there, unchanged. Any other key is *unrecognised* until
the person says they paired it (``--accept FINGERPRINT``, for their other devices).

What this cannot see: an entry the service logs under the account but leaves out of the
listing. Such a key still has to be in the log to be accepted as a neighbour, where a round's
checks (``verify_neighbour_key``) refuse entries claiming the pod's own person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .keylog import (
    KEY_LOG_INCONSISTENT,
    KEY_LOG_MALFORMED,
    KEY_LOG_OWN_ENTRY,
    STATE_FILE,
    KeyLogError,
    KeyLogVerifier,
    LogEntry,
    TreeHead,
    account_commitment,
    path_from_json,
)
from .protocol import key_fingerprint


class KeyLogSource(Protocol):
    """What the audit needs from the service (``PodService`` provides it over HTTP)."""

    def key_log_head(self) -> dict[str, Any]: ...

    def key_log_consistency(self, first: int, second: int) -> dict[str, Any]: ...

    def key_log_mine(self, tree_size: int) -> dict[str, Any]: ...


def verifier_for(home_path: Path, pinned_jwks: dict[str, Any]) -> KeyLogVerifier:
    return KeyLogVerifier(home_path / STATE_FILE, pinned_jwks)


def sync_head(source: KeyLogSource, verifier: KeyLogVerifier) -> TreeHead:
    """Fetch the current head; accept it only if it extends the one this pod kept."""
    head = TreeHead.from_json(source.key_log_head())
    path: list[bytes] = []
    old = verifier.head
    if old is not None and 0 < old.tree_size < head.tree_size:
        proof = source.key_log_consistency(old.tree_size, head.tree_size)
        path = path_from_json(proof.get("consistency_path"))
    verifier.check_head(head, path)
    return head


@dataclass
class AuditReport:
    tree_size: int
    previous_size: int | None
    own_index: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    unrecognised: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unrecognised

    def verdict(self) -> str:
        seen = (
            f"consistent with the head seen before (size {self.previous_size})"
            if self.previous_size is not None
            else "first head seen, kept for next time"
        )
        if self.ok:
            others = len(self.entries) - 1
            return (
                f"key log OK: tree size {self.tree_size}, {seen}; this pod's entry #"
                f"{self.own_index} is unchanged; {others} other "
                f"{'key claims' if others == 1 else 'keys claim'} your account, all recognised"
            )
        listed = ", ".join(
            f"{e['fingerprint']} (entry #{e['index']}, pod “{e['pod_name']}”)"
            for e in self.unrecognised
        )
        count = len(self.unrecognised)
        return (
            f"KEY LOG PROBLEM: {count} {'key claims' if count == 1 else 'keys claim'} your "
            f"account that you have not recognised: {listed}. If you paired it, run "
            f"'dataspace-pod audit --accept FINGERPRINT'; if not, revoke it in the portal and "
            f"report it."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict(),
            "tree_size": self.tree_size,
            "previous_size": self.previous_size,
            "own_index": self.own_index,
            "entries": self.entries,
            "unrecognised": self.unrecognised,
        }


def audit(
    source: KeyLogSource, verifier: KeyLogVerifier, *, pod_id: str, public_key: bytes
) -> AuditReport:
    """Check the log for this pod's person; raises :class:`KeyLogError` if the log misbehaves."""
    previous = verifier.head.tree_size if verifier.head is not None else None
    head = sync_head(source, verifier)
    listing = source.key_log_mine(head.tree_size)
    try:
        pseudonym = str(listing["account"])
        items = list(listing["entries"])
    except (KeyError, TypeError):
        raise KeyLogError(KEY_LOG_MALFORMED) from None
    if not TreeHead.from_json(listing.get("head")).same_tree(head):
        raise KeyLogError(KEY_LOG_INCONSISTENT)  # proofs against a head we did not check
    own_fingerprint = key_fingerprint(public_key)
    report = AuditReport(tree_size=head.tree_size, previous_size=previous, own_index=-1)
    for item in items:
        if not isinstance(item, dict):
            raise KeyLogError(KEY_LOG_MALFORMED)
        entry = LogEntry.from_json(item.get("entry"))
        inclusion = path_from_json(item.get("inclusion_path"))
        try:
            claims_us = entry.account == account_commitment(pseudonym, entry.pod_id)
        except ValueError:
            raise KeyLogError(KEY_LOG_MALFORMED) from None
        if not claims_us:
            raise KeyLogError(KEY_LOG_MALFORMED)  # listed for us, but the log says otherwise
        pod = item.get("pod")
        pod = pod if isinstance(pod, dict) else {}
        shown = {
            "index": entry.index,
            "pod_id": entry.pod_id,
            "fingerprint": entry.fingerprint,
            "logged_at": entry.logged_at.isoformat(),
            "pod_name": str(pod.get("name", ""))[:100],
            "pod_status": str(pod.get("status", ""))[:16],
        }
        if entry.pod_id == pod_id and entry.public_key == public_key:
            verifier.check_own_entry(entry, inclusion, head, pod_id=pod_id, public_key=public_key)
            report.own_index = entry.index
        else:
            verifier.check_member(entry, inclusion, head)
            # Flagged: a key the person never recognised, our pod id with another key (a
            # substituted key), or our key under another pod id.
            if (
                entry.fingerprint not in verifier.known_keys
                or entry.pod_id == pod_id
                or entry.fingerprint == own_fingerprint
            ):
                report.unrecognised.append(shown)
        report.entries.append(shown)
    if report.own_index < 0:
        raise KeyLogError(KEY_LOG_OWN_ENTRY)
    return report
