"""Receipts verify with `cryptography` alone against the published JWK."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.test import Client
from django.urls import reverse

from consent import services
from tests.factories import PodFactory, UserFactory, open_request

pytestmark = pytest.mark.django_db


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(obj: object) -> bytes:
    # Written out here on purpose: a verifier needs only the documented canonical form.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_downloaded_receipt_verifies_with_the_published_key(client: Client) -> None:
    # given a person who agreed and later withdrew
    user = UserFactory()
    model_request = open_request()
    consent = services.consent_grant(
        user=user, model_request=model_request, pod=PodFactory(owner=user)
    )
    services.consent_withdraw(user=user, consent=consent)
    client.force_login(user)

    # when they download the receipt and anyone fetches the public key
    response = client.get(reverse("portal:receipt", args=[consent.pk]))
    jwks = Client().get("/.well-known/dataspace/receipt-keys.json").json()

    # then the signature verifies over the canonical receipt and the fields are all there
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    body = response.json()
    jwk = jwks["keys"][0]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
    assert body["signature"]["kid"] == jwk["kid"]
    public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    public_key.verify(b64url_decode(body["signature"]["value"]), canonical(body["receipt"]))

    receipt = body["receipt"]
    assert receipt["record_id"] == str(consent.pk)
    assert receipt["subject"]["pseudonym"] != user.username
    assert user.username not in json.dumps(receipt)
    assert {c["role"] for c in receipt["controllers"]} == {
        "controller",
        "recipient of the trained model",
    }
    assert receipt["purpose"]["model_request"]["plan_hash"] == model_request.plan_hash
    assert receipt["data"]["category"] == "health.breast_screening"
    assert "diagnosis" in receipt["data"]["fields"]
    assert receipt["lawful_basis"][-1].startswith("GDPR Art. 9(2)(a)")
    assert receipt["notice"]["hash"] == consent.notice_hash
    assert receipt["consent"]["status"] == "dpv:ConsentWithdrawn"
    assert [e["type"] for e in receipt["events"]] == ["given", "withdrawn"]
    assert receipt["withdrawal"]["url"].endswith("/consents/")
    assert receipt["retention"]["records_and_models_days"] == model_request.retention_days


def test_tampered_receipt_fails_verification(client: Client) -> None:
    user = UserFactory()
    consent = services.consent_grant(user=user, model_request=open_request())
    client.force_login(user)
    body = client.get(reverse("portal:receipt", args=[consent.pk])).json()
    jwk = client.get("/.well-known/dataspace/receipt-keys.json").json()["keys"][0]
    body["receipt"]["consent"]["status"] = "dpv:ConsentRefused"
    public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    with pytest.raises(InvalidSignature):
        public_key.verify(b64url_decode(body["signature"]["value"]), canonical(body["receipt"]))
