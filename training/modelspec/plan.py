"""Canonical JSON and the plan hash: what a person consents to, recomputable by their pod.

No torch import here: the pod and the consent log use these on every check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8, no NaN/Infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def plan_hash(spec: Mapping[str, Any], weights_sha256: str, notice_sha256: str) -> str:
    """SHA-256 over the spec, the initial weights' hash and the privacy notice's hash."""
    payload = {"spec": spec, "weights_sha256": weights_sha256, "notice_sha256": notice_sha256}
    return hashlib.sha256(canonical_json(payload)).hexdigest()
