"""The pod's home directory: identity key, state (server, tokens, pinned key), local store.

Secrets are written with 0600 permissions, atomically (write a temporary file, then rename),
so a crash never leaves a half-written key or state file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .protocol import key_fingerprint

KEY_FILE = "identity.key"
STATE_FILE = "state.json"
STORE_FILE = "store.sqlite3"


def default_home() -> Path:
    return Path(os.environ.get("DATASPACE_POD_HOME") or platformdirs.user_data_dir("dataspace-pod"))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass
class PodState:
    """What a pod remembers between runs. Tokens are secrets: never printed, never logged."""

    server: str = ""
    pod_id: str = ""
    name: str = ""
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    receipt_keys: dict[str, Any] = field(default_factory=dict)
    consented_plans: dict[str, str] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return bool(self.server and self.pod_id and self.refresh_token)


class PodHome:
    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_home()

    @property
    def store_path(self) -> Path:
        return self.path / STORE_FILE

    def identity(self) -> Ed25519PrivateKey:
        """The pod's Ed25519 identity key, created on first use (0600)."""
        key_path = self.path / KEY_FILE
        if key_path.exists():
            mode = key_path.stat().st_mode & 0o777
            if mode & 0o077:
                raise PermissionError(
                    f"{key_path} is readable by others (mode {mode:o}); run chmod 600 on it."
                )
            return Ed25519PrivateKey.from_private_bytes(key_path.read_bytes())
        key = Ed25519PrivateKey.generate()
        write_private(key_path, key.private_bytes_raw())
        return key

    def public_key(self) -> bytes:
        return self.identity().public_key().public_bytes_raw()

    def fingerprint(self) -> str:
        return key_fingerprint(self.public_key())

    def load_state(self) -> PodState:
        path = self.path / STATE_FILE
        if not path.exists():
            return PodState()
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {k: v for k, v in data.items() if k in PodState.__dataclass_fields__}
        return PodState(**known)

    def save_state(self, state: PodState) -> None:
        write_private(self.path / STATE_FILE, json.dumps(asdict(state), indent=2).encode("utf-8"))
