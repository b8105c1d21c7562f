"""ConsistencyCheck (Bonawitz et al. 2017, round 3): a service that lies about who survived.

The pod signs the survivor set it is shown and reveals shares only for that set, against at
least t valid signatures over the very same set from its neighbours.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.secagg.test_protocol import Round, flip
from training.secagg import crypto
from training.secagg.errors import AbortError, CryptoError, FloorError, ProtocolError
from training.secagg.wire import Stage, b64


def test_an_unmask_request_that_differs_from_the_signed_set_is_refused() -> None:
    """The split attack on one pod: after it signed "2 survived", the service tells it "2
    dropped" to get 2's masking-key share (it holds 2's self-mask share from others)."""
    r = Round(n=6)
    r.advertise()
    r.share()
    r.mask()
    request = r.server.unmask_request(1)
    assert 2 in request["alive"]
    lying = {
        **request,
        "alive": [v for v in request["alive"] if v != 2],
        "dropped": [*request["dropped"], 2],
    }
    with pytest.raises(FloorError) as refused:
        r.pods[1].unmask(lying)
    assert refused.value.code == "survivors_inconsistent"
    with pytest.raises(ProtocolError) as again:  # and it answers nothing more for this round
        r.pods[1].unmask(request)
    assert again.value.code == "out_of_order"


def test_unmasking_needs_t_signatures_over_the_same_set() -> None:
    r = Round(n=6)
    r.advertise()
    r.share()
    r.mask()
    request = r.server.unmask_request(1)
    t = r.server.t
    too_few = {**request, "signatures": dict(list(request["signatures"].items())[: t - 1])}
    with pytest.raises(FloorError) as refused:
        r.pods[1].unmask(too_few)
    assert refused.value.code == "consistency_unconfirmed"

    r2 = Round(n=6)
    r2.advertise()
    r2.share()
    r2.mask()
    request = r2.server.unmask_request(1)
    forged = dict(request["signatures"])
    first = next(iter(forged))
    forged[first] = flip(forged[first])
    with pytest.raises(CryptoError):
        r2.pods[1].unmask({**request, "signatures": forged})
    reply = r2.pods[2].unmask(r2.server.unmask_request(2))  # the honest request still works
    assert reply["b_shares"]


def test_a_pod_whose_input_is_left_out_signs_nothing() -> None:
    r = Round(n=5)
    r.advertise()
    r.share()
    r.mask(sign=False)
    request = r.server.consistency_request(1)
    with pytest.raises(AbortError, match="not in the survivor set"):
        r.pods[1].consistency_check({**request, "survivors": [2, 3, 4, 5]})


def test_the_server_refuses_a_signature_over_another_set() -> None:
    r = Round(n=5)
    r.advertise()
    r.share()
    r.mask(sign=False)
    other = r.pods[1].consistency_check({"stage": "consistency_check", "survivors": [1, 2, 3, 4]})
    with pytest.raises(CryptoError):
        r.server.receive_consistency(1, other)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(5, 9), st.data())
def test_a_split_survivor_set_never_yields_both_share_kinds(n: int, data: st.DataObject) -> None:
    """For any split the service shows — pod X "survived" to group A, "dropped" to group B —
    and c colluding neighbours (whose keys and shares the service holds, c ≤ 2t − k), the
    honest pods never release t shares of both kinds of X. Without the ConsistencyCheck the
    split succeeds at c = 2t − k (each honest pod trusting what it is told)."""
    r = Round(n=n)
    r.advertise()
    r.share()
    r.mask(sign=False)
    k, t = r.server.k, r.server.t
    assert k == n - 1  # small cohorts: the complete graph
    x = data.draw(st.sampled_from(sorted(r.pods)))
    others = [u for u in sorted(r.pods) if u != x]
    random.Random(data.draw(st.integers(0, 2**16))).shuffle(others)
    c = data.draw(st.integers(0, max(0, 2 * t - k)))
    corrupt, honest = others[:c], others[c:]
    group_a = set(data.draw(st.lists(st.sampled_from(honest), unique=True)) if honest else [])
    everyone = sorted(r.server.masked)
    shown = {
        u: everyone if (u in group_a or u == x) else [v for v in everyone if v != x]
        for u in [x, *honest]
    }
    round_id = r.server.round_id.encode()
    signatures: dict[int, dict[tuple[int, ...], str]] = {}
    for u in [x, *honest]:
        reply = r.pods[u].consistency_check({"stage": "consistency_check", "survivors": shown[u]})
        signatures[u] = {tuple(shown[u]): reply["signature"]}
    for u in corrupt:  # the service signs any set in the name of the pods it controls
        signatures[u] = {
            tuple(s): b64(crypto.sign_survivors(r.ids[u], round_id, list(s)))
            for s in {tuple(v) for v in shown.values()}
        }
    b_holders, s_holders = set(corrupt), set(corrupt)  # colluders hold both kinds of X's shares
    for u in honest:
        mine = set(shown[u])
        peers = [v for v in [*others, x] if v != u]
        request = {
            "stage": Stage.UNMASK.value,
            "alive": sorted(v for v in peers if v in mine),
            "dropped": sorted(v for v in peers if v not in mine),
            "signatures": {
                str(v): signatures[v][tuple(shown[u])]
                for v in peers
                if v in mine and tuple(shown[u]) in signatures.get(v, {})
            },
        }
        try:
            reply = r.pods[u].unmask(request)
        except FloorError:
            continue
        if str(x) in reply["b_shares"]:
            b_holders.add(u)
        if str(x) in reply["s_shares"]:
            s_holders.add(u)
    assert not (len(b_holders) >= t and len(s_holders) >= t)
