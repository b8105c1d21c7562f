"""Known answers: the mask streams, mask keys, the encoding and a pod's masked vector, pinned
byte for byte. Pods (``pods/agent``) and the service run separately released code; if any of
these change, an old pod's masks no longer cancel against a new service's, so a faster
implementation must reproduce them exactly. The digests were taken from the first
implementation (one full-length ``update_into`` per stream, float64 encoding in one pass).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from training.secagg import client as client_module
from training.secagg import crypto
from training.secagg.aggregate import remove_masks, sum_range
from training.secagg.client import ClientRound
from training.secagg.encoding import Layout, encode_vector
from training.secagg.prg import mask_stream
from training.secagg.server import ServerRound

KEY = bytes(range(32))


def digest(vector: np.ndarray) -> str:
    return hashlib.sha256(vector.astype("<u4").tobytes()).hexdigest()


@pytest.mark.parametrize(
    ("length", "offset", "expected", "head"),
    [
        (
            100_003,
            0,
            "8c3fbd14d14340336eb31b8491a1406b9201c446fc2bc7ff268a332af6e3d630",
            [0xB60090F2, 0xD09F492A, 0x6A9AF3A9, 0x80772EDD],
        ),
        (
            100_003,
            4096,
            "6a610654b3eb018b779e2d1d96c4a918fedc856f8c24275fcdc86fdcbdf41c31",
            [0x4A76A0A3, 0x95A465EF, 0x419414EA, 0x530816CE],
        ),
        (
            7,
            8,
            "2b32fa919d7c7961cf06dde11b0e84894c9fa060c9c374ad608bde261d1658fe",
            [0xDEB5BC0E, 0xBD832CB5, 0x35A9A808, 0x99912C18],
        ),
    ],
)
def test_mask_stream_is_pinned(length: int, offset: int, expected: str, head: list[int]) -> None:
    stream = mask_stream(KEY, length, offset)
    assert stream.dtype == np.uint32 and stream.shape == (length,)
    assert stream[:4].tolist() == head
    assert digest(stream) == expected


def test_mask_stream_is_aes256_ctr_keystream_read_as_little_endian_words() -> None:
    """Rebuilt from the definition, block by block: word i of the stream is bytes 4i..4i+3 of
    AES-256_k(counter) ‖ AES-256_k(counter + 1) ‖ …, the counter a 128-bit big-endian block
    number (coordinate offset / 4)."""
    # ECB on single counter blocks is how CTR is defined (the test rebuilds CTR by hand).
    ecb = Cipher(algorithms.AES(KEY), modes.ECB()).encryptor()  # noqa: S305
    first_block = 4096 // 4
    blocks = b"".join(
        ecb.update((first_block + i).to_bytes(16, "big")) for i in range(10)
    )  # 40 words
    expected = np.frombuffer(blocks, dtype="<u4")
    assert np.array_equal(mask_stream(KEY, 40, 4096), expected)


def test_mask_keys_are_pinned() -> None:
    shared = bytes(range(32, 64))
    assert (
        crypto.mask_key(shared, b"round-7", 3, 2).hex()
        == "a188cfd6c78efb74c2950c33bb2d64206dd5fbac674828fd00afd1fe88f89c91"
    )
    assert crypto.mask_key(shared, b"round-7", 3, 2) == crypto.mask_key(shared, b"round-7", 2, 3)
    assert (
        crypto.self_mask_key(bytes(range(64, 96)), b"round-7", 3).hex()
        == "fc1760f9c80820833ea6ea26ee86b0259a1086eac5bb770eadcae648f8b6821b"
    )


def known_parts(dim: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "update": rng.uniform(-2, 2, dim).astype(np.float32),
        "weight": np.array([20.0]),
        "eval_loss": np.array([3.25]),
        "eval_correct": np.array([15]),  # an integer array is encoded like floats
        "eval_examples": np.array([20.0]),
    }


def test_encoding_is_pinned() -> None:
    layout = Layout.for_training(model_dim=70_001, max_clients=100, clip_norm=1.0, max_weight=100)
    vector = encode_vector(known_parts(70_001), layout, np.random.default_rng(9))
    assert digest(vector) == "ec8cf5fe6e117e0039ecc8f39668bfdd8a51cd8852ddbd5d1b4d5130bff70982"
    assert vector[-4:].tolist() == [2621440, 52, 30720, 40960]


def test_encoding_clamps_at_the_bound_the_same_way() -> None:
    """Values beyond a bound that float32 cannot represent exactly clamp to the float64 bound."""
    layout = Layout.for_training(model_dim=4099, max_clients=7, clip_norm=0.1, max_weight=1)
    parts = {
        **known_parts(4099),
        "update": np.linspace(-0.3, 0.3, 4099, dtype=np.float32),
        "weight": np.array([1.0]),
    }
    vector = encode_vector(parts, layout, np.random.default_rng(2))
    assert digest(vector) == "9e8f08e3b1eb0b4b0c0a8a24d4d8a462e96e1b87c5398d13796455929dc5f338"


class _FixedKeys:
    """Stands in for the client's X25519 key generation: the keys come from a list, in order."""

    def __init__(self, seeds: list[bytes]) -> None:
        self.seeds = seeds

    def generate(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.seeds.pop(0))


class _FixedRandom:
    def __init__(self, start: int) -> None:
        self.next = start

    def urandom(self, size: int) -> bytes:
        self.next += 1
        return hashlib.sha256(self.next.to_bytes(4, "big")).digest()[:size]


def test_masked_vectors_and_their_unmasked_sum_are_pinned(monkeypatch: Any) -> None:
    """A whole round of four pods (one dropped after sharing keys) with fixed keys and seeds:
    each pod's masked vector — its encoded input plus its self mask plus and minus the pairwise
    masks — and the service's unmasked sum are what they have always been."""
    seeds = [hashlib.sha256(b"x25519 %d" % i).digest() for i in range(8)]
    monkeypatch.setattr(client_module, "X25519PrivateKey", _FixedKeys(seeds))
    monkeypatch.setattr(client_module, "os", _FixedRandom(0))
    dim = 50_003
    layout = Layout.for_training(model_dim=dim, max_clients=10, clip_norm=1.0, max_weight=10)
    ids = {
        u: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"id %d" % u).digest())
        for u in range(1, 5)
    }
    server = ServerRound(
        round_id="known-answer",
        identity_keys={u: k.public_key().public_bytes_raw() for u, k in ids.items()},
        threshold_fraction=0.6,
        min_survivors=2,
        layout=layout,
        seed=b"graph",
    )
    pods = {u: ClientRound(k, rng=np.random.default_rng(u)) for u, k in ids.items()}
    for u, pod in pods.items():
        server.receive_advert(u, pod.advertise_keys(server.advertise_request(u)))
    server.close_advertise()
    for u, pod in pods.items():
        server.receive_shares(u, pod.share_keys(server.share_request(u)))
    server.close_share()
    masked = {}
    for u in (1, 2, 3):  # pod 4 drops before sending its masked input
        parts = {**known_parts(dim), "weight": np.array([float(u)])}
        masked[u] = pods[u].masked_input(server.masked_request(u), parts)
        server.receive_masked(u)
    server.close_masked()
    for u in server.masked:
        server.receive_consistency(u, pods[u].consistency_check(server.consistency_request(u)))
    server.close_consistency()
    for u in server.signatures:
        server.receive_unmask(u, pods[u].unmask(server.unmask_request(u)))
    plan = server.close_unmask()
    assert plan.pairs  # the dropped pod's pairwise masks are removed, so that path is pinned too

    assert {u: digest(v) for u, v in masked.items()} == {
        1: "fcd3e74fcce9fc2a80425697d0047304006642435939f58d3e79d4b9bae1b65a",
        2: "2db0d85a799199ba9d4b30e87c79a8d8ab181d600f593091e8ab5c74af1e2098",
        3: "ae5e5185b62f1ad9d48fe54ae2655bef47daa5b438b63f35bf73d1088e8add79",
    }
    sources = [io.BytesIO(masked[u].astype("<u4").tobytes()) for u in (1, 2, 3)]
    total = remove_masks(sum_range(sources, 0, layout.length), plan)
    assert digest(total) == "dcded81e44800b07485d3085f5dbe9f18aa6f79e98d401db8b522b2e84286dca"
    plain = sum(
        encode_vector({**known_parts(dim), "weight": np.array([float(u)])}, layout, rng)
        for u, rng in ((u, np.random.default_rng(u)) for u in (1, 2, 3))
    )
    assert np.array_equal(total, np.asarray(plain, dtype=np.uint32))
