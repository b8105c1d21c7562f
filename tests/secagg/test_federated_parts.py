"""SCAFFOLD's control-variate deltas and FedNova's step counts in the masked vector."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.secagg.helpers import parts_for, quantized_sum
from training.modelspec.server_optim import scaffold_server_control
from training.secagg import graph
from training.secagg.encoding import Layout, Segment, decode, scale_bits
from training.secagg.simulate import simulate_round
from training.secagg.wire import Stage

STAGES = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK]


def test_the_layout_is_byte_for_byte_the_old_one_when_the_parts_are_off() -> None:
    def seg(name: str, size: int, bound: float) -> Segment:
        return Segment(name, size, bound, scale_bits(50, bound))

    old = Layout(
        (
            seg("update", 7, 2.0),
            seg("weight", 1, 2.0),
            seg("eval_loss", 1, 100.0 * 10_000),
            seg("eval_correct", 1, 10_000.0),
            seg("eval_examples", 1, 10_000.0),
        )
    )
    new = Layout.for_training(model_dim=7, max_clients=50, clip_norm=1.0, max_weight=2)
    assert new == old and new.to_dict() == old.to_dict()
    extended = Layout.for_training(
        model_dim=7, max_clients=50, clip_norm=1.0, max_weight=2, control_dim=7, max_local_steps=20
    )
    assert extended.segments[:5] == old.segments  # appended, never interleaved
    assert [(s.name, s.size) for s in extended.segments[5:]] == [
        ("control_delta", 7),
        ("local_steps", 1),
    ]
    assert extended.segments[6].bound == 40.0
    assert Layout.from_dict(extended.to_dict()) == extended


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 12), st.integers(1, 16), st.integers(0, 10_000), st.data())
def test_masked_control_delta_sum_equals_the_plain_sum_under_dropout(
    n: int, dim: int, seed: int, data: st.DataObject
) -> None:
    k = graph.choose_k(n)
    t = graph.choose_t(k, 0.6)
    tolerable = (n - 1) - t if n <= k + 1 else 0
    drops = data.draw(st.lists(st.integers(1, n), unique=True, max_size=max(0, tolerable)))
    drop = {u: data.draw(st.sampled_from(STAGES)) for u in drops}
    rng = np.random.default_rng(seed)
    clip = 5.0
    layout = Layout.for_training(
        model_dim=dim,
        max_clients=50,
        clip_norm=1.0,
        max_weight=10,
        control_dim=dim,
        control_clip=clip,
        max_local_steps=30,
    )
    inputs: dict[int, dict[str, npt.NDArray[np.float64]]] = {}
    for u in range(1, n + 1):
        delta = rng.normal(size=dim) * rng.uniform(0.01, 3.0)
        norm = float(np.linalg.norm(delta))
        inputs[u] = {
            **parts_for(rng, dim),
            "control_delta": delta if norm <= clip else delta * (clip / norm),
            "local_steps": np.array([float(rng.integers(0, 30))]),
        }

    result = simulate_round(inputs, layout, drop=drop, seed=seed)

    survivors = [u for u in inputs if u not in drop or drop[u] == Stage.UNMASK]
    assert result.survivors == survivors
    # Exactly the sum of the survivors' encodings: the masks cancel, dropped pods' too.
    assert np.array_equal(result.total, quantized_sum(inputs, survivors, layout, seed))
    # And that decodes to the plain float sum within one quantization step per pod.
    totals = decode(result.total, layout)
    control = layout.segments[5]
    plain = sum(inputs[u]["control_delta"] for u in survivors)
    assert np.all(np.abs(totals["control_delta"] - plain) <= len(survivors) / 2**control.bits)
    # The server's step c ← c + Σ Δc_i / N from the masked total is the plain sum's step.
    c = rng.normal(size=dim).astype(np.float32)
    masked_step = scaffold_server_control(c, totals["control_delta"], population=n)
    plain_step = scaffold_server_control(c, np.asarray(plain), population=n)
    assert np.allclose(masked_step, plain_step, atol=len(survivors) / 2**control.bits / n + 1e-6)
    steps = sum(inputs[u]["local_steps"] for u in survivors)
    assert np.all(
        np.abs(totals["local_steps"] - steps) <= len(survivors) / 2 ** layout.segments[6].bits
    )
