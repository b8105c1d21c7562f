"""The pod defends against the model-inconsistency attack.

A dishonest service gives one pod (the target) another model, seed or candidate than the rest.
It could give the others a model whose update is zero, and the cohort's "sum" would then be the
target's own update. The round's secure-aggregation id binds what the pods compute on
(:func:`pods.agent.protocol.bind_task`). So the service must either state an id that does not
bind the target's task, which the target refuses, or give the target an id of its own. Then the
target's signed keys do not verify at any honest neighbour, and that neighbour stops before any
masked input leaves it. Each attack is built from a real round's messages and answered by the
pods' real workers.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pods.agent.protocol import bind_task, task_bound, task_digest
from tests.pods.test_defends import Pods, declined
from training.secagg.wire import b64

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_honest_round_id_binds_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods(monkeypatch, 4)
    for message in pods.first.values():
        assert task_bound(message["payload"]["round_id"], message["task"])
    ids = {m["payload"]["round_id"] for m in pods.first.values()}
    assert len(ids) == 1  # one protocol instance for the cohort
    assert pods.round.secagg_state["round_id"] in ids


@pytest.mark.parametrize(
    "tamper",
    [
        lambda task: task.__setitem__("seed", task["seed"] + 1),
        lambda task: task.__setitem__("control_sha256", "0" * 64),
    ],
    ids=["seed", "control"],
)
def test_a_task_the_round_id_does_not_bind_is_declined(
    monkeypatch: pytest.MonkeyPatch, tamper: Any
) -> None:
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    tamper(message["task"])
    assert declined(worker.handle(message)) == "model_not_bound"
    assert worker.rounds == {}  # no key advertised


def test_the_digest_covers_every_bound_fact() -> None:
    task: dict[str, Any] = {
        "request": "r",
        "plan_hash": "p",
        "weights_sha256": "w",
        "base_round": 1,
        "initial_weights_sha256": "i",
        "seed": 7,
    }
    changes: list[dict[str, Any]] = [
        {"request": "r2"},
        {"plan_hash": "p2"},
        {"weights_sha256": "w2"},
        {"base_round": 2},
        {"initial_weights_sha256": "i2"},
        {"seed": 8},
        {"control_sha256": "c"},
        {"candidates": [{"label": "A", "sha256": "x"}]},
    ]
    digests = {task_digest(task)} | {task_digest({**task, **change}) for change in changes}
    assert len(digests) == len(changes) + 1
    # URLs are where to fetch, not what is computed on: they do not change the id.
    assert task_digest({**task, "weights_url": "/elsewhere"}) == task_digest(task)
    assert not task_bound("no-digest", task)
    assert not task_bound(bind_task("round", {**task, "seed": 8}), task)
    assert task_bound(bind_task("round", task), task)


@pytest.mark.parametrize("attacked", [True, False], ids=["other_model", "honest_control"])
def test_a_target_given_another_model_cannot_be_singled_out(
    monkeypatch: pytest.MonkeyPatch, attacked: bool
) -> None:
    """The service re-binds the target's id to the target's own (other) task, so the target
    accepts it. The target's signed keys then verify at no honest neighbour: relayed as they
    are, they make that neighbour stop the round before it masks anything."""
    pods = Pods(monkeypatch, 4)
    target_id = next(iter(pods.first))
    adverts: dict[int, dict[str, Any]] = {}
    index = {p.pod_id: p.index for p in pods.round.participants.select_related("pod")}
    keys = {p.index: bytes(p.pod.public_key) for p in pods.round.participants.select_related("pod")}
    for pod_id, message in pods.first.items():
        if attacked and pod_id == target_id:
            message = copy.deepcopy(message)
            message["task"]["seed"] += 1
            base = message["payload"]["round_id"].rpartition("#")[0]
            message["payload"]["round_id"] = bind_task(base, message["task"])
        reply = pods.workers[pod_id].handle(message)
        assert reply is not None and reply["type"] == "round.reply", reply
        adverts[index[pod_id]] = {**reply["payload"], "identity_key": b64(keys[index[pod_id]])}

    def share_keys(pod_id: Any) -> dict[str, Any]:
        """The key-sharing stage as a service relays it: every neighbour's signed keys."""
        first = pods.first[pod_id]
        relayed = {
            str(v): {k: adverts[v][k] for k in ("c_pk", "s_pk", "signature", "identity_key")}
            for v in first["payload"]["neighbours"]
        }
        payload = {"stage": "share_keys", "adverts": relayed}
        envelope = {k: first[k] for k in ("type", "round")}
        return {**envelope, "stage": "share_keys", "payload": payload}

    neighbours = [
        pod_id for pod_id, m in pods.first.items() if index[target_id] in m["payload"]["neighbours"]
    ]
    assert neighbours
    for pod_id in neighbours:
        worker = pods.workers[pod_id]
        reply = worker.handle(share_keys(pod_id))
        if attacked:
            assert reply is None  # stopped: a signature does not verify
            assert pods.round.pk not in worker.rounds  # round keys gone; nothing was masked
        else:  # the same relay in an honest round goes on
            assert reply is not None and reply["type"] == "round.reply", reply
