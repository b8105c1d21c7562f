"""Secure aggregation (SecAgg+, Bell et al. 2020, on Bonawitz et al. 2017), pure and typed.

Pods mask their fixed-point encoded updates with a self mask and pairwise masks shared with
their neighbours in a random k-regular graph; the server learns only the sum over survivors,
even when pods drop out, as long as each needed secret has ``t`` responding neighbours.

Modules: ``encoding`` (fixed point in Z_2^32), ``prg`` (AES-CTR mask streams), ``shamir``
(t-of-k over GF(2^521 - 1)), ``crypto`` (X25519, Ed25519, AES-GCM envelopes, HKDF), ``graph``
(neighbourhoods, k and t), ``client`` and ``server`` (the four stages as state machines),
``aggregate`` (sharded sums and mask removal), ``dp`` (distributed DP and accounting).
"""

from .errors import AbortError, CryptoError, ProtocolError, SecAggError

__all__ = ["AbortError", "CryptoError", "ProtocolError", "SecAggError"]
