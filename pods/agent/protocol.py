"""What pod and service sign and show each other: shared by the agent and the server.

Every signed message starts with a domain-separation label, so a signature made for one
purpose (pairing, the channel challenge) can never be replayed as another.
"""

from __future__ import annotations

import base64
import hashlib

PAIRING_LABEL = b"dataspace/pairing/v1\x00"
CHALLENGE_LABEL = b"dataspace/ws-challenge/v1\x00"


def key_fingerprint(public_key: bytes) -> str:
    """Human-comparable fingerprint of an Ed25519 public key (SHA-256, 80 bits, base32 groups).

    The pod prints it at pairing and the portal shows it on the approval page, so a person can
    check that the pod they approve is the one in front of them.
    """
    digest = hashlib.sha256(public_key).digest()[:10]
    text = base64.b32encode(digest).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def pairing_message(device_code: str, public_key: bytes) -> bytes:
    """Signed by the pod's identity key to prove possession when it asks to be paired."""
    return PAIRING_LABEL + device_code.encode("utf-8") + b"\x00" + public_key


def challenge_message(nonce: bytes, pod_id: str) -> bytes:
    """Signed by the pod's identity key to open the control channel (fresh nonce per connection)."""
    return CHALLENGE_LABEL + nonce + pod_id.encode("ascii")
