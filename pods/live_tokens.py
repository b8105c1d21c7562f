"""Bearer tokens that a live control channel of this process has authenticated.

A pod authenticates once per connection: its bearer token (looked up in the token table) and
then a signature of the identity key over a fresh nonce. While that connection stays open, the
same token on the round's hot HTTP paths (the weights download, the masked-input upload) is
taken on the connection's word — no token lookup per request. The binding ends when the
connection closes (revoking a pod closes it), when the token expires, and never reaches another
process (a request there is checked against the table as before). Nothing here is secret: only
tokens' SHA-256 checksums are kept, as the token table keeps them.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone


@dataclass(frozen=True)
class LivePod:
    """What a request authenticated by a live channel carries as ``request.auth``."""

    pod_id: str
    expires: datetime
    channel_name: str


_live: dict[str, LivePod] = {}
_lock = threading.Lock()


def checksum(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode("utf-8")).hexdigest()


def bind(token_checksum: str, live: LivePod) -> None:
    with _lock:
        _live[token_checksum] = live


def unbind(channel_name: str) -> None:
    """The connection ``channel_name`` closed: its token needs the table again."""
    with _lock:
        for key in [k for k, v in _live.items() if v.channel_name == channel_name]:
            del _live[key]


def live_pod(raw_token: str) -> LivePod | None:
    """The live binding of a bearer token in this process, if any and not expired."""
    key = checksum(raw_token)
    with _lock:
        live = _live.get(key)
        if live is not None and live.expires <= timezone.now():
            del _live[key]
            live = None
    return live
