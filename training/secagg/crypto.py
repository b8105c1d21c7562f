"""Key agreement, key derivation, signatures and share envelopes.

- X25519 for both the encryption keys (c) and the masking keys (s) of a pod in a round.
- Ed25519 identity keys (registered at pairing) sign the advertised public keys, so a server
  that substitutes keys is caught (Bonawitz et al. 2017, section 4, active adversary). Signed
  with ``cryptography``; verified with libsodium (PyNaCl), whose verification takes half the
  time of OpenSSL's (a pod verifies two signatures per neighbour per round) and is as strict:
  canonical ``S`` only, and no small-order key or ``R``.
- AES-256-GCM envelopes for Shamir shares: key HKDF(X25519(c_sk_u, c_pk_v), info="enc"), random
  96-bit nonce, associated data = round id ‖ u ‖ v. Every failure is the same opaque error.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

from .errors import CryptoError

ADVERT_LABEL = b"dataspace/secagg/advertise/v1\x00"
SURVIVORS_LABEL = b"dataspace/secagg/consistency/v1\x00"


def hkdf(secret: bytes, *, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def x25519_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def agree(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise CryptoError() from None


def pair(u: int, v: int) -> bytes:
    return struct.pack(">II", min(u, v), max(u, v))


def mask_key(shared: bytes, round_id: bytes, u: int, v: int) -> bytes:
    """The pairwise mask key of u and v (symmetric in u, v)."""
    return hkdf(shared, salt=round_id, info=b"mask" + pair(u, v))


def self_mask_key(seed: bytes, round_id: bytes, u: int) -> bytes:
    return hkdf(seed, salt=round_id, info=b"self" + struct.pack(">I", u))


def advert_message(round_id: bytes, index: int, c_pk: bytes, s_pk: bytes) -> bytes:
    return ADVERT_LABEL + round_id + b"\x00" + struct.pack(">I", index) + c_pk + s_pk


def sign_advert(
    identity: Ed25519PrivateKey, round_id: bytes, index: int, c_pk: bytes, s_pk: bytes
) -> bytes:
    return identity.sign(advert_message(round_id, index, c_pk, s_pk))


def verify_advert(
    identity_public: bytes, signature: bytes, round_id: bytes, index: int, c_pk: bytes, s_pk: bytes
) -> None:
    verify_signature(identity_public, signature, advert_message(round_id, index, c_pk, s_pk))


def survivors_message(round_id: bytes, survivors: list[int]) -> bytes:
    """What a pod signs in the ConsistencyCheck: the round and its sorted survivor set."""
    ordered = sorted(survivors)
    return (
        SURVIVORS_LABEL
        + round_id
        + b"\x00"
        + struct.pack(f">I{len(ordered)}I", len(ordered), *ordered)
    )


def sign_survivors(identity: Ed25519PrivateKey, round_id: bytes, survivors: list[int]) -> bytes:
    return identity.sign(survivors_message(round_id, survivors))


def verify_survivors(
    identity_public: bytes, signature: bytes, round_id: bytes, survivors: list[int]
) -> None:
    verify_survivors_message(identity_public, signature, survivors_message(round_id, survivors))


def verify_survivors_message(identity_public: bytes, signature: bytes, message: bytes) -> None:
    """:func:`verify_survivors` with the :func:`survivors_message` made once for many pods."""
    verify_signature(identity_public, signature, message)


def verify_signature(identity_public: bytes, signature: bytes, message: bytes) -> None:
    """An Ed25519 signature (RFC 8032) over ``message`` by ``identity_public``, through
    libsodium; :class:`CryptoError` when it is not one."""
    if len(identity_public) != 32 or len(signature) != 64:
        raise CryptoError()
    try:
        sodium.crypto_sign_open(bytes(signature) + message, bytes(identity_public))
    except (BadSignatureError, ValueError, TypeError):
        raise CryptoError() from None


def _aad(round_id: bytes, sender: int, receiver: int) -> bytes:
    return round_id + b"\x00" + struct.pack(">II", sender, receiver)


def envelope_key(c_sk: X25519PrivateKey, peer_c_pk: bytes, round_id: bytes) -> bytes:
    """The AES-256-GCM key of the envelopes between two pods (either direction: the same ECDH
    secret). A pod derives it once per neighbour, when it seals, and opens with it later."""
    return hkdf(agree(c_sk, peer_c_pk), salt=round_id, info=b"enc")


def seal(key: bytes, round_id: bytes, sender: int, receiver: int, plaintext: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(round_id, sender, receiver))


def open_sealed(key: bytes, round_id: bytes, sender: int, receiver: int, envelope: bytes) -> bytes:
    if len(envelope) < 12 + 16:
        raise CryptoError()
    try:
        return AESGCM(key).decrypt(envelope[:12], envelope[12:], _aad(round_id, sender, receiver))
    except InvalidTag:
        raise CryptoError() from None
