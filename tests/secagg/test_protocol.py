"""The whole protocol: exact sums under dropout, aborts below threshold, and tampering."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from tests.secagg.helpers import parts_for, quantized_sum
from training.secagg import graph
from training.secagg.aggregate import remove_masks, shard_ranges, sum_range
from training.secagg.client import ClientRound
from training.secagg.encoding import Layout
from training.secagg.errors import AbortError, CryptoError, ProtocolError, SecAggError
from training.secagg.server import ServerRound
from training.secagg.simulate import simulate_round
from training.secagg.wire import Stage

STAGES = [
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
]


def layout_for(dim: int, clients: int = 50) -> Layout:
    return Layout.for_training(model_dim=dim, max_clients=clients, clip_norm=1.0, max_weight=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 14), st.integers(1, 24), st.integers(0, 10_000), st.data())
def test_unmasked_sum_equals_plain_sum_under_any_tolerable_dropout(
    n: int, dim: int, seed: int, data: st.DataObject
) -> None:
    k = graph.choose_k(n)
    t = graph.choose_t(k, 0.6)
    tolerable = (n - 1) - t if n <= k + 1 else 0
    drops = data.draw(st.lists(st.integers(1, n), unique=True, max_size=max(0, tolerable)))
    drop = {u: data.draw(st.sampled_from(STAGES)) for u in drops}
    rng = np.random.default_rng(seed)
    layout = layout_for(dim)
    inputs = {u: parts_for(rng, dim) for u in range(1, n + 1)}

    result = simulate_round(inputs, layout, drop=drop, seed=seed)

    # A pod lost after sending its masked input (while signing, or unmasking) is in the sum.
    late = (Stage.CONSISTENCY_CHECK, Stage.UNMASK)
    expected_survivors = [u for u in inputs if u not in drop or drop[u] in late]
    assert result.survivors == expected_survivors
    assert np.array_equal(result.total, quantized_sum(inputs, result.survivors, layout, seed))


@settings(max_examples=10, deadline=None)
@given(st.integers(5, 10), st.integers(0, 1000))
def test_below_threshold_aborts_revealing_nothing(n: int, seed: int) -> None:
    k = graph.choose_k(n)
    t = graph.choose_t(k, 0.6)
    too_many = (n - 1) - t + 1
    drop = {u: Stage.MASKED_INPUT for u in range(1, too_many + 1)}
    rng = np.random.default_rng(seed)
    inputs = {u: parts_for(rng, 4) for u in range(1, n + 1)}
    with pytest.raises(AbortError):
        simulate_round(inputs, layout_for(4), drop=drop, seed=seed)


def test_too_few_survivors_aborts_at_the_server() -> None:
    rng = np.random.default_rng(0)
    inputs = {u: parts_for(rng, 4) for u in range(1, 6)}
    with pytest.raises(AbortError, match="needed"):
        simulate_round(inputs, layout_for(4), min_survivors=5, drop={1: Stage.SHARE_KEYS})


def test_large_cohort_uses_a_sparse_graph_and_still_sums_exactly() -> None:
    n, dim = 40, 8
    rng = np.random.default_rng(3)
    inputs = {u: parts_for(rng, dim) for u in range(1, n + 1)}
    drop = {2: Stage.MASKED_INPUT, 9: Stage.SHARE_KEYS, 17: Stage.UNMASK}
    layout = layout_for(dim)
    result = simulate_round(inputs, layout, drop=drop, seed=3)
    assert graph.choose_k(n) < n - 1
    assert np.array_equal(result.total, quantized_sum(inputs, result.survivors, layout, 3))


# --- a hand-driven round for tampering tests -------------------------------------------------


class Round:
    def __init__(self, n: int = 5, dim: int = 6) -> None:
        self.layout = layout_for(dim)
        self.ids = {u: Ed25519PrivateKey.generate() for u in range(1, n + 1)}
        self.server = ServerRound(
            round_id="r-1",
            identity_keys={u: k.public_key().public_bytes_raw() for u, k in self.ids.items()},
            threshold_fraction=0.6,
            min_survivors=2,
            layout=self.layout,
            seed=b"s",
        )
        self.pods = {u: ClientRound(k, rng=np.random.default_rng(u)) for u, k in self.ids.items()}
        self.parts = {u: parts_for(np.random.default_rng(u), dim) for u in self.ids}

    def advertise(self) -> None:
        for u, pod in self.pods.items():
            self.server.receive_advert(u, pod.advertise_keys(self.server.advertise_request(u)))
        self.server.close_advertise()

    def share(self) -> dict[int, dict[str, Any]]:
        replies = {u: pod.share_keys(self.server.share_request(u)) for u, pod in self.pods.items()}
        for u, reply in replies.items():
            self.server.receive_shares(u, reply)
        self.server.close_share()
        return replies

    def mask(self, skip: tuple[int, ...] = (), *, sign: bool = True) -> dict[int, np.ndarray]:
        out = {}
        for u, pod in self.pods.items():
            if u not in skip:
                out[u] = pod.masked_input(self.server.masked_request(u), self.parts[u])
                self.server.receive_masked(u)
        self.server.close_masked()
        if sign:
            self.sign()
        return out

    def sign(self) -> None:
        """The ConsistencyCheck: every survivor signs the survivor set it is shown."""
        for u in self.server.masked:
            request = self.server.consistency_request(u)
            self.server.receive_consistency(u, self.pods[u].consistency_check(request))
        self.server.close_consistency()


def flip(b64text: str, at: int = 20) -> str:
    raw = bytearray(base64.b64decode(b64text))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_wrong_signature_is_rejected() -> None:
    r = Round()
    reply = r.pods[1].advertise_keys(r.server.advertise_request(1))
    reply["signature"] = flip(reply["signature"])
    with pytest.raises(CryptoError) as excinfo:
        r.server.receive_advert(1, reply)
    assert excinfo.value.code == "crypto_failure"
    assert (
        "signature" not in str(excinfo.value).lower()
        or str(excinfo.value) == "A cryptographic check failed."
    )


def test_substituted_public_key_is_detected_by_the_pod() -> None:
    r = Round()
    r.advertise()
    request = r.server.share_request(1)
    first = next(iter(request["adverts"]))
    request["adverts"][first]["s_pk"] = base64.b64encode(
        bytes(32 * [7])
    ).decode()  # a server's own key
    with pytest.raises(CryptoError):
        r.pods[1].share_keys(request)


def test_altered_ciphertext_is_rejected() -> None:
    r = Round()
    r.advertise()
    r.share()
    request = r.server.masked_request(1)
    sender = next(iter(request["shares"]))
    request["shares"][sender] = flip(request["shares"][sender], at=30)
    with pytest.raises(CryptoError):
        r.pods[1].masked_input(request, r.parts[1])


def test_share_for_the_wrong_receiver_is_rejected() -> None:
    r = Round()
    r.advertise()
    r.share()
    for_two = r.server.masked_request(2)["shares"]
    request = r.server.masked_request(1)
    sender = next(s for s in request["shares"] if s in for_two and s != "1")
    request["shares"][sender] = for_two[sender]  # meant for pod 2
    with pytest.raises(CryptoError):
        r.pods[1].masked_input(request, r.parts[1])


def test_shares_to_the_wrong_receivers_are_refused_by_the_server() -> None:
    r = Round()
    r.advertise()
    reply = r.pods[1].share_keys(r.server.share_request(1))
    reply["shares"].pop(next(iter(reply["shares"])))
    with pytest.raises(ProtocolError) as excinfo:
        r.server.receive_shares(1, reply)
    assert excinfo.value.code == "wrong_receivers"


def test_vector_of_wrong_length_is_refused() -> None:
    r = Round()
    r.advertise()
    r.share()
    request = r.server.masked_request(1)
    with pytest.raises(SecAggError) as excinfo:
        r.pods[1].masked_input(request, {**r.parts[1], "update": np.zeros(3)})
    assert excinfo.value.code == "invalid_input"
    with pytest.raises(SecAggError, match="shorter"):
        sum_range([io.BytesIO(b"\0" * 8)], 0, r.layout.length)


def test_out_of_order_and_replayed_messages_are_refused() -> None:
    r = Round()
    with pytest.raises(ProtocolError) as excinfo:
        r.pods[1].share_keys({"stage": "share_keys", "adverts": {}})
    assert excinfo.value.code == "out_of_order"
    r.advertise()
    with pytest.raises(ProtocolError):
        r.server.receive_advert(1, {})  # the server has moved on


def test_pod_refuses_alive_and_dropped_together_and_answers_once() -> None:
    r = Round()
    r.advertise()
    r.share()
    r.mask(skip=(5,))
    request = r.server.unmask_request(1)
    assert request["dropped"] == [5]
    malicious = {**request, "alive": [*request["alive"], 5]}
    with pytest.raises(ProtocolError) as excinfo:
        r.pods[1].unmask(malicious)
    assert excinfo.value.code == "alive_and_dropped"
    r.pods[1].unmask(request)
    with pytest.raises(ProtocolError) as again:
        r.pods[1].unmask(request)
    assert again.value.code == "out_of_order"


def test_server_never_accepts_both_share_kinds_of_one_pod() -> None:
    r = Round()
    r.advertise()
    r.share()
    r.mask(skip=(5,))
    honest = r.pods[1].unmask(r.server.unmask_request(1))
    forged = {
        "b_shares": {**honest["b_shares"], "5": honest["b_shares"]["2"]},
        "s_shares": honest["s_shares"],
    }
    with pytest.raises(ProtocolError) as excinfo:
        r.server.receive_unmask(1, forged)
    assert excinfo.value.code == "both_shares"
    assert set(r.server.requested.values()) == {"b", "s"}
    assert r.server.requested[5] == "s" and all(r.server.requested[u] == "b" for u in (1, 2, 3, 4))


def test_server_state_survives_json_between_stages() -> None:
    r = Round(n=6)
    for u, pod in r.pods.items():
        r.server.receive_advert(u, pod.advertise_keys(r.server.advertise_request(u)))
        r.server = ServerRound.from_dict(json.loads(json.dumps(r.server.to_dict())))
    r.server.close_advertise()
    r.share()
    stored = r.mask(skip=(3,))
    r.server = ServerRound.from_dict(json.loads(json.dumps(r.server.to_dict())))
    for u in r.server.masked:
        r.server.receive_unmask(u, r.pods[u].unmask(r.server.unmask_request(u)))
    plan = r.server.close_unmask()
    total = remove_masks(sum(stored.values()).astype(np.uint32), plan)
    expected = np.zeros(r.layout.length, np.uint32)
    from training.secagg.encoding import encode_vector

    for u in plan.survivors:
        expected += encode_vector(r.parts[u], r.layout, np.random.default_rng(u))
    assert np.array_equal(total, expected)
    assert "b_seeds" not in repr(plan)


def test_sharded_sum_and_unmasking_equal_the_whole() -> None:
    dim = 1001
    r = Round(n=6, dim=dim)
    r.advertise()
    r.share()
    stored = {u: v.tobytes() for u, v in r.mask(skip=(2,)).items()}
    for u in r.server.masked:
        r.server.receive_unmask(u, r.pods[u].unmask(r.server.unmask_request(u)))
    plan = r.server.close_unmask()
    whole = remove_masks(
        sum_range([io.BytesIO(b) for b in stored.values()], 0, r.layout.length), plan
    )
    pieces = [
        remove_masks(sum_range([io.BytesIO(b) for b in stored.values()], start, stop), plan, start)
        for start, stop in shard_ranges(r.layout.length, 3)
    ]
    assert np.array_equal(np.concatenate(pieces), whole)


def test_masked_vectors_look_uniform_on_every_byte_lane() -> None:
    r = Round(n=4, dim=50_000)
    r.advertise()
    r.share()
    r.parts[1] = {**r.parts[1], "update": np.zeros(50_000)}  # even an all-zero input
    vector = r.mask()[1]
    lanes = vector.view(np.uint8).reshape(-1, 4)
    for lane in range(4):
        counts = np.bincount(lanes[:, lane], minlength=256)
        assert chisquare(counts).pvalue > 1e-4, f"byte lane {lane} is not uniform"


def test_reprs_hold_no_secrets() -> None:
    r = Round()
    r.advertise()
    assert "sk" not in repr(r.pods[1]) and "seed" not in repr(r.pods[1])
