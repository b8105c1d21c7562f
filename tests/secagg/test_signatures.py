"""Ed25519 verification (training.secagg.crypto.verify_signature, through libsodium) agrees with
OpenSSL's on signatures made by the identity keys' signer, and on every corruption of them."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from training.secagg import crypto
from training.secagg.errors import CryptoError


def _openssl_accepts(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _accepts(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        crypto.verify_signature(public, signature, message)
    except CryptoError:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=300),
    part=st.sampled_from(["key", "signature", "message"]),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_a_signature_verifies_and_any_changed_byte_is_refused_by_both(
    seed: bytes, message: bytes, part: str, position: int, flip: int
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes_raw()
    signature = key.sign(message)
    assert _accepts(public, signature, message) and _openssl_accepts(public, signature, message)
    parts = {"key": bytearray(public), "signature": bytearray(signature)}
    parts["message"] = bytearray(message or b"\x00")
    target = parts[part]
    target[position % len(target)] ^= flip
    changed = (bytes(parts["key"]), bytes(parts["signature"]), bytes(parts["message"]))
    if part == "message" and not message:
        changed = (public, signature, b"\x00")  # a message where there was none
    assert _accepts(*changed) is False
    assert _openssl_accepts(*changed) is False


def test_the_protocol_messages_verify_and_their_fields_are_bound() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    round_id, c_pk, s_pk = b"r" * 32, b"c" * 32, b"s" * 32
    signature = crypto.sign_advert(key, round_id, 7, c_pk, s_pk)
    crypto.verify_advert(public, signature, round_id, 7, c_pk, s_pk)
    with pytest.raises(CryptoError):
        crypto.verify_advert(public, signature, round_id, 8, c_pk, s_pk)  # another pod's index
    with pytest.raises(CryptoError):
        crypto.verify_advert(public, signature, round_id, 7, s_pk, c_pk)  # keys swapped
    survivors = crypto.sign_survivors(key, round_id, [3, 1, 2])
    crypto.verify_survivors(public, survivors, round_id, [1, 2, 3])
    with pytest.raises(CryptoError):
        crypto.verify_survivors(public, survivors, round_id, [1, 2])


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (b"\x01" * 31, b"\x00" * 64),  # a short key
        (b"\x01" * 32, b"\x00" * 63),  # a short signature
        (b"\x01" * 32, b"\x00" * 65),  # a long one
        (b"\x01" + b"\x00" * 31, b"\x00" * 64),  # the neutral point as the key (small order)
    ],
)
def test_malformed_keys_and_signatures_are_refused(public: bytes, signature: bytes) -> None:
    with pytest.raises(CryptoError):
        crypto.verify_signature(public, signature, b"message")


def test_a_non_canonical_s_is_refused_by_both() -> None:
    """S + L verifies the same equation as S in arithmetic mod L; RFC 8032 requires S < L."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    signature = key.sign(b"message")
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(signature[32:], "little") + order
    forged = signature[:32] + s.to_bytes(32, "little")
    assert _openssl_accepts(public, forged, b"message") is False
    assert _accepts(public, forged, b"message") is False
