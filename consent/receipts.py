"""Signed consent receipts (fields of ISO/IEC TS 27560:2023 and the Kantara Consent Receipt).

A receipt is canonical JSON signed with the service's Ed25519 key; anyone can verify it with
the public key published as a JWK Set at ``/.well-known/dataspace/receipt-keys.json`` and
nothing but a standard Ed25519 implementation.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import uuid
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Prefetch
from django.urls import reverse
from django.utils import timezone

from pods.agent.protocol import canonical_json

from .models import Consent, ConsentEvent, DataSubject

RECEIPT_VERSION = "dataspace-consent-receipt/1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


@functools.lru_cache(maxsize=4)
def _load_key(encoded: str, key_file: str, may_generate: bool) -> Ed25519PrivateKey:
    if encoded:
        try:
            raw = base64.b64decode(encoded, validate=True)
            return Ed25519PrivateKey.from_private_bytes(raw)
        except ValueError:
            raise ImproperlyConfigured(
                "RECEIPT_SIGNING_KEY must be base64 of a 32-byte Ed25519 private key."
            ) from None
    if not may_generate:
        raise ImproperlyConfigured("RECEIPT_SIGNING_KEY must be set outside the embedded default.")
    path = Path(key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = Ed25519PrivateKey.generate().private_bytes_raw()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race; read theirs
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
    return Ed25519PrivateKey.from_private_bytes(path.read_bytes())


def signing_key() -> Ed25519PrivateKey:
    return _load_key(
        settings.RECEIPT_SIGNING_KEY,
        str(settings.RECEIPT_SIGNING_KEY_FILE),
        settings.DEBUG or settings.EMBEDDED,
    )


def public_key_bytes() -> bytes:
    return signing_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id() -> str:
    return hashlib.sha256(public_key_bytes()).hexdigest()[:16]


def public_jwks() -> dict[str, Any]:
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64url(public_key_bytes()),
                "kid": key_id(),
                "use": "sig",
                "alg": "EdDSA",
            }
        ]
    }


def sign(payload: dict[str, Any], envelope: str = "receipt") -> dict[str, Any]:
    """``{envelope: payload, "signature": …}``: receipts, and the model cards of
    :mod:`training.card`, are signed alike over the payload's canonical JSON."""
    signature = signing_key().sign(canonical_json(payload))
    return {
        envelope: payload,
        "signature": {
            "alg": "EdDSA",
            "crv": "Ed25519",
            "kid": key_id(),
            "value": _b64url(signature),
        },
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def receipt_build(
    consent: Consent,
    *,
    pseudonym: uuid.UUID | None = None,
    events: Iterable[ConsentEvent] | None = None,
) -> dict[str, Any]:
    """The receipt's content for one consent, with its whole event history (``pseudonym``
    and ``events``, in order, when the caller read them already)."""
    model_request = consent.model_request
    provider = model_request.provider
    category = model_request.data_category
    if pseudonym is None:
        pseudonym = DataSubject.objects.get_or_create(user_id=consent.user_id)[0].pseudonym
    fields = [*model_request.features, *([model_request.label] if model_request.label else [])]
    if events is None:
        events = ConsentEvent.objects.filter(consent=consent).order_by("seq")
    # The provider's words in the language of the notice the person read, where it gave them.
    texts = model_request.texts
    language = consent.notice.language
    return {
        "version": RECEIPT_VERSION,
        "schema": "ISO/IEC TS 27560:2023 consent record; Kantara Consent Receipt v1.1 fields",
        "record_id": str(consent.id),
        "issued_at": timezone.now().isoformat(),
        "jurisdiction": "EU (GDPR)",
        "subject": {"pseudonym": str(pseudonym)},
        "controllers": [
            {
                "role": "controller",
                "name": settings.CONTROLLER_NAME,
                "contact": settings.CONTROLLER_CONTACT,
                "dpo": settings.CONTROLLER_DPO,
            },
            {
                "role": "recipient of the trained model",
                "name": provider.name,
                "contact": provider.contact_email,
                "dpo": " ".join(x for x in (provider.dpo_name, provider.dpo_email) if x),
            },
        ],
        "purpose": {
            "description": texts.purpose_in(language)[0],
            "category": model_request.purpose_category,
            "model_request": {
                "id": str(model_request.id),
                "title": texts.title_in(language)[0],
                "plan_hash": consent.plan_hash,
            },
        },
        "lawful_basis": ["GDPR Art. 6(1)(a) consent"]
        + (["GDPR Art. 9(2)(a) explicit consent"] if category.special_category else []),
        "data": {
            "category": category.slug,
            "special_category": category.special_category,
            "fields": fields,
        },
        "processing": [
            "dpv:Use — local training on the data subject's own device",
            "dpv:Transfer — masked model updates only, combined by secure aggregation",
            "dpv:Store — aggregated models and round records",
        ],
        "notice": {
            "version": consent.notice.version,
            "language": language,
            "hash": consent.notice_hash,
            "url": settings.SITE_URL + reverse("portal:request", args=[model_request.id]),
        },
        "consent": {
            "status": f"dpv:Consent{consent.status.capitalize()}",
            "given_at": _iso(consent.given_at),
            "withdrawn_at": _iso(consent.withdrawn_at),
            "expires_at": _iso(consent.expires_at),
            "pod_fingerprint": consent.pod.fingerprint if consent.pod else None,
        },
        "events": [
            {
                "seq": e.seq,
                "type": e.event_type,
                "at": e.at.isoformat(),
                "method": e.method,
                "notice_hash": e.notice_hash,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
                # A decision made by the person's standing rule names the rule (id and text).
                **({"rule": e.detail["rule"]} if "rule" in e.detail else {}),
            }
            for e in events
        ],
        "withdrawal": {
            "method": "One click on “My consents” in the portal, at any time.",
            "url": settings.SITE_URL + reverse("portal:consents"),
            "effect": "No further training rounds; models already trained stay with the provider.",
        },
        "retention": {
            "records_and_models_days": model_request.retention_days,
            "consent_valid_until": _iso(consent.expires_at),
        },
    }


def receipt_signed(consent: Consent) -> dict[str, Any]:
    return sign(receipt_build(consent))


def receipts_signed_for(request_id: uuid.UUID, user_ids: Collection[int]) -> dict[int, Any]:
    """The signed receipts of these people's consents to one request, by person, read in a
    fixed number of queries whatever their number (a round's cohort: the receipts ride its
    first message instead of one request each)."""
    consents = list(
        Consent.objects.filter(model_request_id=request_id, user_id__in=list(user_ids))
        .select_related("model_request__provider", "model_request__data_category", "notice", "pod")
        .prefetch_related(Prefetch("events", queryset=ConsentEvent.objects.order_by("seq")))
    )
    pseudonyms = dict(
        DataSubject.objects.filter(user_id__in=[c.user_id for c in consents]).values_list(
            "user_id", "pseudonym"
        )
    )
    return {
        consent.user_id: sign(
            receipt_build(
                consent,
                pseudonym=pseudonyms.get(consent.user_id),
                events=consent.events.all(),
            )
        )
        for consent in consents
    }
