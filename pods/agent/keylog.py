"""The key log: an append-only Merkle tree of pod identity keys (RFC 9162 style).

Why: in a round the service tells each pod who its neighbours are and relays their identity
keys. A dishonest service could invent a neighbour (a key it holds) to collect the pod's Shamir
shares. It cannot do that *unseen* if every identity key must sit in a public, append-only log:
the pod checks each neighbour's key is in the log (inclusion proof, RFC 9162 §2.1.3), keeps the
last signed tree head it saw and checks every new head extends it (consistency proof, §2.1.4),
and checks its own entry never changes. Keys the service adds under a person's account then show
up in that person's portal and in ``dataspace-pod audit``.

Both sides read this module: the service builds trees and proofs with it, the pod verifies.
It is pure (no Django) and typed strictly. The Merkle tree itself (RFC 9162 §2.1 hashing, proof
generation and verification) is :mod:`pods.agent.merkle`; this module holds what the key log
puts in it (entries, signed tree heads) and the pod's verifier.

Every failure raises :class:`KeyLogError` with a stable ``code`` and a fixed message: like a
decrypt, a proof check says only *that* it failed, never which hash differed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .merkle import HASH_SIZE, MAX_PATH, is_consistent, is_included, leaf_hash
from .merkle import MerkleTree as MerkleTree  # re-exported: pods.key_log(_bench) import it here
from .protocol import key_fingerprint

ENTRY_LABEL = b"dataspace/keylog/entry/v1\x00"
ACCOUNT_LABEL = b"dataspace/keylog/account/v1\x00"
STH_LABEL = b"dataspace/keylog/tree-head/v1\x00"
STATE_FILE = "keylog.json"

# Stable error codes (API and CLI).
KEY_LOG_INCONSISTENT = "key_log_inconsistent"  # a new head does not extend the one seen before
KEY_NOT_IN_LOG = "key_not_in_log"  # an inclusion proof does not verify
KEY_LOG_BAD_HEAD = "key_log_bad_head"  # a tree head is malformed or its signature fails
KEY_LOG_OWN_ENTRY = "key_log_own_entry_changed"  # our own entry is missing or differs
KEY_LOG_MALFORMED = "key_log_malformed"  # an entry or proof is not well formed

_MESSAGES = {
    KEY_LOG_INCONSISTENT: "the key log's new tree head does not extend the one seen before",
    KEY_NOT_IN_LOG: "the key is not in the key log",
    KEY_LOG_BAD_HEAD: "the key log's tree head does not verify with the pinned service key",
    KEY_LOG_OWN_ENTRY: "this pod's own key-log entry is missing or changed",
    KEY_LOG_MALFORMED: "a key-log entry or proof is malformed",
}


class KeyLogError(Exception):
    """A key-log check failed. ``code`` is stable; the message names no hash or key."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.message = _MESSAGES[code]
        super().__init__(f"{code}: {self.message}")


# -- proofs (RFC 9162 §2.1.3.2 and §2.1.4.2, in pods.agent.merkle) ---------------------------------


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Check that the leaf hash ``leaf`` sits at ``index`` of the tree of ``tree_size`` leaves."""
    if not is_included(leaf, index, tree_size, path, root):
        raise KeyLogError(KEY_NOT_IN_LOG)


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Check that the tree of ``second`` leaves extends the tree of ``first`` leaves."""
    if not is_consistent(first, second, first_root, second_root, path):
        raise KeyLogError(KEY_LOG_INCONSISTENT)


# -- entries ---------------------------------------------------------------------------------------


def account_commitment(pseudonym: str, pod_id: str) -> bytes:
    """Which account an entry claims, as only that account's holder can recognise it.

    SHA-256 over the owner's pseudonym *and* the pod id: the person (whose pod knows the
    pseudonym from its receipts) recomputes it for each entry, while anyone reading the log
    cannot tell that two pods belong to the same person.
    """
    return hashlib.sha256(
        ACCOUNT_LABEL + uuid.UUID(pseudonym).bytes + uuid.UUID(pod_id).bytes
    ).digest()


@dataclass(frozen=True)
class LogEntry:
    """One key-log entry: which pod, claiming which account, holds which identity key, since when.

    Its leaf is fixed-length big-endian bytes, so no two entries encode alike:
    label ‖ index (u64) ‖ pod id (16) ‖ account commitment (32) ‖ Ed25519 key (32) ‖ time (u64 ms).
    """

    index: int
    pod_id: str
    account: bytes
    public_key: bytes
    timestamp_ms: int

    def leaf(self) -> bytes:
        return (
            ENTRY_LABEL
            + struct.pack(">Q", self.index)
            + uuid.UUID(self.pod_id).bytes
            + self.account
            + self.public_key
            + struct.pack(">Q", self.timestamp_ms)
        )

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.leaf())

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.public_key)

    @property
    def logged_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pod_id": self.pod_id,
            "account": _b64(self.account),
            "public_key": _b64(self.public_key),
            "timestamp": self.timestamp_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> LogEntry:
        try:
            entry = cls(
                index=_uint(data["index"]),
                pod_id=str(uuid.UUID(str(data["pod_id"]))),
                account=_unb64(data["account"], HASH_SIZE),
                public_key=_unb64(data["public_key"], 32),
                timestamp_ms=_uint(data["timestamp"]),
            )
        except (KeyError, TypeError, ValueError):
            raise KeyLogError(KEY_LOG_MALFORMED) from None
        return entry


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, size: int) -> bytes:
    if not isinstance(value, str):
        raise TypeError("base64 text expected")
    raw = base64.b64decode(value, validate=True)
    if len(raw) != size:
        raise ValueError("wrong length")
    return raw


def _uint(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise ValueError("unsigned 64-bit integer expected")
    return value


def path_to_json(path: Sequence[bytes]) -> list[str]:
    return [_b64(p) for p in path]


def path_from_json(data: Any) -> list[bytes]:
    if not isinstance(data, list) or len(data) > MAX_PATH:
        raise KeyLogError(KEY_LOG_MALFORMED)
    try:
        return [_unb64(p, HASH_SIZE) for p in data]
    except (TypeError, ValueError):
        raise KeyLogError(KEY_LOG_MALFORMED) from None


# -- signed tree heads (RFC 9162 §4.10, in our own encoding) ---------------------------------------


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head: the service vouches that the log of ``tree_size`` has this root."""

    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    key_id: str = ""
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return STH_LABEL + struct.pack(">QQ", self.tree_size, self.timestamp_ms) + self.root_hash

    def same_tree(self, other: TreeHead) -> bool:
        return self.tree_size == other.tree_size and self.root_hash == other.root_hash

    def to_json(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "timestamp": self.timestamp_ms,
            "root_hash": _b64(self.root_hash),
            "signature": {"alg": "EdDSA", "kid": self.key_id, "value": _b64(self.signature)},
        }

    @classmethod
    def from_json(cls, data: Any) -> TreeHead:
        try:
            signature = data["signature"]
            if signature.get("alg") != "EdDSA":
                raise ValueError("unsupported signature algorithm")
            return cls(
                tree_size=_uint(data["tree_size"]),
                timestamp_ms=_uint(data["timestamp"]),
                root_hash=_unb64(data["root_hash"], HASH_SIZE),
                key_id=str(signature["kid"]),
                signature=_unb64(signature["value"], 64),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KeyLogError(KEY_LOG_BAD_HEAD) from None


def sign_tree_head(
    key: Ed25519PrivateKey, *, key_id: str, tree_size: int, root: bytes, timestamp_ms: int
) -> TreeHead:
    unsigned = TreeHead(tree_size=tree_size, timestamp_ms=timestamp_ms, root_hash=root)
    return TreeHead(
        tree_size=tree_size,
        timestamp_ms=timestamp_ms,
        root_hash=root,
        key_id=key_id,
        signature=key.sign(unsigned.signed_bytes()),
    )


def _jwk_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_tree_head(head: TreeHead, pinned_jwks: Mapping[str, Any]) -> None:
    """Check the head's signature with the service key the pod pinned at pairing (a JWK Set)."""
    try:
        keys = {
            k["kid"]: k
            for k in pinned_jwks["keys"]
            if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
        }
        public = Ed25519PublicKey.from_public_bytes(_jwk_bytes(keys[head.key_id]["x"]))
        public.verify(head.signature, head.signed_bytes())
    except (KeyError, TypeError, ValueError, AttributeError, InvalidSignature):
        raise KeyLogError(KEY_LOG_BAD_HEAD) from None


# -- the pod's verifier ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnEntry:
    index: int
    leaf_hash: bytes


class KeyLogVerifier:
    """What a pod keeps of the key log: the last verified tree head and its own entry.

    State lives in ``keylog.json`` in the pod's home (written atomically, owner-only), so a
    restart cannot be used to make the pod forget the head it saw and accept a fork. The first
    head is trusted on first use (at pairing); every later one must be consistent with it.
    """

    def __init__(self, path: Path, pinned_jwks: Mapping[str, Any]) -> None:
        self.path = path
        self.pinned_jwks = pinned_jwks
        self.head: TreeHead | None = None
        self.own: OwnEntry | None = None
        self.known_keys: list[str] = []
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("head") is not None:
                self.head = TreeHead.from_json(data["head"])
            own = data.get("own_entry")
            if own is not None:
                self.own = OwnEntry(
                    index=_uint(own["index"]), leaf_hash=_unb64(own["leaf_hash"], HASH_SIZE)
                )
            self.known_keys = [str(k) for k in data.get("known_keys", [])]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise KeyLogError(KEY_LOG_MALFORMED) from None

    def save(self) -> None:
        from .home import write_private

        data = {
            "head": self.head.to_json() if self.head else None,
            "own_entry": (
                {"index": self.own.index, "leaf_hash": _b64(self.own.leaf_hash)}
                if self.own
                else None
            ),
            "known_keys": sorted(set(self.known_keys)),
        }
        write_private(self.path, json.dumps(data, indent=2).encode("utf-8"))

    def check_head(self, new: TreeHead, consistency_path: Sequence[bytes]) -> bool:
        """Verify ``new`` and that it extends the stored head; keep it. True when it moved on.

        A head of the same size must have the same root (otherwise the log forked); a smaller
        head is refused (the log may only grow, and the pod must not be rolled back).
        """
        verify_tree_head(new, self.pinned_jwks)
        old = self.head
        if old is not None:
            if new.tree_size < old.tree_size:
                raise KeyLogError(KEY_LOG_INCONSISTENT)
            verify_consistency(
                old.tree_size, new.tree_size, old.root_hash, new.root_hash, consistency_path
            )
            if old.same_tree(new):
                return False
        self.head = new
        self.save()
        return True

    def _require_current(self, head: TreeHead) -> None:
        if self.head is None or not self.head.same_tree(head):
            # Only heads already checked for consistency count: a head made for one pod alone
            # (a split view) would otherwise prove anything.
            raise KeyLogError(KEY_LOG_INCONSISTENT)

    def check_member(
        self, entry: LogEntry, inclusion_path: Sequence[bytes], head: TreeHead
    ) -> None:
        """The entry is in the log at its own index, under a head this pod verified."""
        self._require_current(head)
        verify_inclusion(
            entry.leaf_hash(), entry.index, head.tree_size, inclusion_path, head.root_hash
        )

    def check_own_entry(
        self,
        entry: LogEntry,
        inclusion_path: Sequence[bytes],
        head: TreeHead,
        *,
        pod_id: str,
        public_key: bytes,
    ) -> None:
        """Our entry names our pod and our key, is in the log, and is the one seen before."""
        if entry.pod_id != pod_id or entry.public_key != public_key:
            raise KeyLogError(KEY_LOG_OWN_ENTRY)
        try:
            self.check_member(entry, inclusion_path, head)
        except KeyLogError:
            raise KeyLogError(KEY_LOG_OWN_ENTRY) from None
        seen = OwnEntry(index=entry.index, leaf_hash=entry.leaf_hash())
        if self.own is None:
            self.own = seen
            self.save()
        elif self.own != seen:
            raise KeyLogError(KEY_LOG_OWN_ENTRY)

    def accept_key(self, fingerprint: str) -> None:
        """The person says they paired the pod with this key (another device of theirs)."""
        if fingerprint not in self.known_keys:
            self.known_keys.append(fingerprint)
            self.save()


def verify_neighbour_key(
    verifier: KeyLogVerifier,
    *,
    pod_id: str,
    public_key: bytes,
    entry: Mapping[str, Any],
    inclusion_path: Any,
    head: Mapping[str, Any],
    consistency_path: Any = (),
    owner_pseudonym: str | None = None,
) -> LogEntry:
    """For the rounds engine: accept a neighbour's identity key only if the log vouches for it.

    ``entry``, ``inclusion_path``, ``head`` and ``consistency_path`` are the JSON the service
    attaches (see :meth:`LogEntry.to_json`, :func:`path_to_json`, :meth:`TreeHead.to_json`);
    ``consistency_path`` runs from the pod's stored head to ``head``. The neighbour's entry must
    name the same pod and key, be included under a head consistent with every head this pod saw,
    and — if ``owner_pseudonym`` (this pod's owner, from its receipts) is given — must not claim
    this pod's own person (cohorts hold one pod per person).
    Raises :class:`KeyLogError`; returns the verified entry.
    """
    parsed = LogEntry.from_json(entry)
    sth = TreeHead.from_json(head)
    if parsed.pod_id != pod_id or parsed.public_key != public_key:
        raise KeyLogError(KEY_NOT_IN_LOG)
    if owner_pseudonym is not None and parsed.account == account_commitment(
        owner_pseudonym, parsed.pod_id
    ):
        raise KeyLogError(KEY_NOT_IN_LOG)
    if verifier.head is None or not verifier.head.same_tree(sth):
        verifier.check_head(sth, path_from_json(consistency_path))
    verifier.check_member(parsed, path_from_json(inclusion_path), sth)
    return parsed
