"""The pod enforces consent on its own, whatever the service says (DESIGN.md section 8).

Before training, the pod checks the owner's consent receipt: signed by the service key it pinned
at pairing, for this request, given and unexpired, for this exact plan — the plan hash recomputed
from the spec and weights the pod actually received — and only for fields the owner agreed to.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .protocol import canonical_json, plan_hash


class ConsentRefused(Exception):
    """The pod refuses a task; ``code`` says why (never any record or key)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_signed(
    signed: Mapping[str, Any], jwks: Mapping[str, Any], envelope: str
) -> dict[str, Any]:
    """The content under ``envelope`` (``receipt``, ``card``) if its Ed25519 signature over the
    canonical JSON verifies with a key of the JWK Set; else ``ValueError``."""
    try:
        content = dict(signed[envelope])
        signature = signed["signature"]
        keys = {
            k["kid"]: k for k in jwks["keys"] if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
        }
        key = keys[signature["kid"]]
        Ed25519PublicKey.from_public_bytes(_b64url(key["x"])).verify(
            _b64url(signature["value"]), canonical_json(content)
        )
    except (KeyError, TypeError, ValueError, InvalidSignature):
        raise ValueError(f"the {envelope} does not verify") from None
    return content


def verify_receipt(signed: Mapping[str, Any], pinned_jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The receipt's content, if its signature verifies with a key pinned at pairing."""
    try:
        return verify_signed(signed, pinned_jwks, "receipt")
    except ValueError:
        raise ConsentRefused(
            "bad_receipt", "the consent receipt does not verify with the pinned key"
        ) from None


def check_task(
    *,
    receipt: Mapping[str, Any],
    request_id: str,
    spec: Mapping[str, Any],
    weights_sha256: str,
    now: datetime,
) -> None:
    """Refuse unless the owner's consent covers exactly this task.

    ``weights_sha256`` is the SHA-256 of the request's *initial* weights: the plan hash binds
    spec, initial weights and notice. In a request's first round the pod checks it against the
    bytes it downloaded; in later rounds the global model is the service's aggregate, which no
    pod can check (an honest-but-curious service is the threat model, README section "Threat
    model").
    """
    purpose = receipt.get("purpose", {}).get("model_request", {})
    consent = receipt.get("consent", {})
    if purpose.get("id") != request_id:
        raise ConsentRefused("wrong_request", "the receipt is for another request")
    if consent.get("status") != "dpv:ConsentGiven":
        raise ConsentRefused("no_consent", "the owner has not given consent")
    expires = consent.get("expires_at")
    if not isinstance(expires, str) or datetime.fromisoformat(expires) <= now:
        raise ConsentRefused("consent_expired", "the owner's consent has expired")
    computed = plan_hash(spec, weights_sha256, str(receipt.get("notice", {}).get("hash")))
    if computed != purpose.get("plan_hash"):
        raise ConsentRefused("plan_mismatch", "this task is not the plan the owner agreed to")
    data = receipt.get("data", {})
    task_data = spec.get("data", {})
    if task_data.get("category") != data.get("category"):
        raise ConsentRefused("fields_not_consented", "the task asks for another data category")
    wanted: Sequence[str] = [
        *task_data.get("features", []),
        *([task_data["label"]] if task_data.get("label") else []),
    ]
    if not set(wanted) <= set(data.get("fields", [])):
        raise ConsentRefused("fields_not_consented", "the task asks for fields outside the consent")


def first_fitting(
    sources: Sequence[Callable[[], dict[str, Any]]], fits: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """The first receipt that ``fits``, the ``sources`` tried in order and each only if those
    before it gave none (a source may refuse too: a signature that does not verify). The last
    source's refusal is the task's."""
    if not sources:
        raise ValueError("no source of receipts")
    *earlier, last = sources
    for source in earlier:
        try:
            receipt = source()
            fits(receipt)
        except ConsentRefused:
            continue
        return receipt
    receipt = last()
    fits(receipt)
    return receipt
