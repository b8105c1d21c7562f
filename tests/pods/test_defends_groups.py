"""The pod defends its person against a dishonest service when cohorts are split into valued
groups (issue 16): no sum its input is in may cover fewer pods than the plan's minimum.

Each attack is a message of a real grouped round (the real rounds engine, real signed
receipts), tampered with as a dishonest service could, and answered by the pod's real
:class:`pods.agent.rounds.RoundWorker`: it declines with a reason code and reveals nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dataspace.demo import demo_request_spec, demo_weights
from tests.factories import ProviderFactory, breast_category
from tests.pods.test_defends import Pods, declined
from tests.training.rounds.test_engine import breast_data, capture_pod_messages
from tests.training.rounds.test_engine import consenting_online_pod as consenting
from training.rounds import answers, opening
from training.rounds import valuation as engine_valuation
from training.services import model_request_create

pytestmark = pytest.mark.django_db(transaction=True)


class GroupedPods(Pods):
    """Eight consenting pods, a plan of two valued groups of at least four (pods 0–3, 4–7)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        breast_category()
        spec = demo_request_spec(rounds=3, cohort_size=8, min_participants=4)
        spec["valuation"] = {"groups": 2}
        self.model_request = model_request_create(
            provider=ProviderFactory(), spec=spec, weights=demo_weights(spec)
        )
        outbox: list[tuple[Any, dict[str, Any]]] = []
        capture_pod_messages(monkeypatch, outbox)
        x, y = breast_data()
        self.workers = {}
        slot = {}
        for i in range(8):
            pod, key = consenting(self.model_request, f"g{i}")
            rows = slice(i * 40, (i + 1) * 40)
            self.workers[pod.pk] = self._worker(pod, key, x[rows], y[rows])
            slot[str(pod.pk)] = i // 4
        monkeypatch.setattr(engine_valuation, "group_slot", lambda _r, p, _g: slot[p])
        opened = opening.request_try_start(self.model_request)
        assert opened is not None
        self.round = opened
        self.first = dict(outbox)
        self.outbox = outbox


def test_the_honest_grouped_round_names_a_group_the_pod_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pods = GroupedPods(monkeypatch)
    worker, message, _ = pods.one()
    group = message["payload"]["group"]
    assert len(group) == 4 and set(message["payload"]["neighbours"]) <= set(group)
    reply = worker.handle(message)
    assert reply is not None and reply["type"] == "round.reply"


def test_a_group_below_the_plan_minimum_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = GroupedPods(monkeypatch)
    worker, message, _ = pods.one()
    me = message["payload"]["index"]
    small = [me, *message["payload"]["neighbours"][:2]]
    message["payload"]["group"] = small
    message["payload"]["neighbours"] = small[1:]
    message["payload"]["threshold"] = 2
    code = declined(worker.handle(message))
    assert code in ("group_below_plan", "neighbourhood_below_plan")
    assert worker.rounds == {}  # no key advertised


def test_a_neighbour_outside_the_group_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = GroupedPods(monkeypatch)
    worker, message, _ = pods.one()
    payload = message["payload"]
    stranger = next(u for u in range(1, 9) if u not in payload["group"])
    payload["neighbours"] = [*payload["neighbours"], stranger]
    payload["threshold"] = len(payload["neighbours"]) // 2 + 1
    assert declined(worker.handle(message)) == "neighbour_outside_group"


def test_groups_a_plan_does_not_state_are_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    me = message["payload"]["index"]
    message["payload"]["group"] = [me, *message["payload"]["neighbours"]]
    assert declined(worker.handle(message)) == "groups_not_in_plan"


def test_candidates_a_plan_does_not_state_are_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    message["task"]["candidates"] = [
        {"label": "A", "url": message["task"]["weights_url"], "sha256": "0" * 64}
    ]
    assert declined(worker.handle(message)) == "groups_not_in_plan"


def test_a_survivor_set_that_shrinks_the_group_below_the_minimum_gets_no_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the consistency check the service says most of the pod's group dropped, so that its
    group's sum would cover two pods: the pod refuses to sign and reveals no share."""
    pods = GroupedPods(monkeypatch)
    tampered = None
    while pods.outbox:
        pod_id, message = pods.outbox.pop(0)
        if message.get("stage") == "consistency_check" and tampered is None:
            tampered = pod_id
            lie = copy.deepcopy(message)
            survivors = lie["payload"]["survivors"]
            worker = pods.workers[pod_id]
            group = worker.rounds[lie["round"]].client.group
            assert group is not None
            mine = [u for u in survivors if u in group]
            keep = {worker.rounds[lie["round"]].client.index, *mine[:1]}
            lie["payload"]["survivors"] = [u for u in survivors if u not in group or u in keep]
            assert declined(worker.handle(lie)) == "group_survivors_below_plan"
            assert lie["round"] not in worker.rounds  # nothing more is answered
            continue
        reply = pods.workers[pod_id].handle(message)
        if reply is not None and reply["type"] == "round.reply":
            answers.round_reply(
                pod_id=pod_id,
                round_id=reply["round"],
                stage=reply["stage"],
                payload=reply["payload"],
            )
    assert tampered is not None
