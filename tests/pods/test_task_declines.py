"""Whatever a task provokes — a malformed task, records the plan cannot take, a failure while
preparing data or training — the pod declines that round with a code and keeps running: the
next good task gets its answer (issue 14: "the agent never dies on a task")."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from pods.agent.data import MemoryData
from pods.agent.rounds import RoundWorker
from tests.pods.test_defends import Pods, declined

pytestmark = pytest.mark.django_db(transaction=True)


def _break_task(message: dict[str, Any]) -> None:
    message["task"] = "not a task"


def _garbage_spec(message: dict[str, Any]) -> None:
    message["task"]["spec"] = {"title": "x"}


def _missing_key(message: dict[str, Any]) -> None:
    del message["task"]["weights_sha256"]


def _no_payload(message: dict[str, Any]) -> None:
    message["payload"] = ["nothing"]


def _labels_missing(worker: RoundWorker) -> None:
    columns = dict(worker.data.columns)  # type: ignore[attr-defined]
    worker.data = MemoryData(
        "health.breast_screening", {**columns, "diagnosis": [None] * len(columns["diagnosis"])}
    )


def _data_fails(worker: RoundWorker) -> None:
    class Broken(MemoryData):
        def records(self, category: str) -> list[dict[str, Any]]:
            raise RuntimeError("the disk went away")

    worker.data = Broken("health.breast_screening", dict(worker.data.columns))  # type: ignore[attr-defined]


CASES: list[
    tuple[str, Callable[[dict[str, Any]], None] | None, Callable[..., None] | None, str]
] = [
    ("task", _break_task, None, "malformed_task"),
    ("spec", _garbage_spec, None, "bad_spec"),
    ("key", _missing_key, None, "malformed_task"),
    ("payload", _no_payload, None, "malformed_stage"),
    ("labels", None, _labels_missing, "no_data"),
    ("failure", None, _data_fails, "task_failed"),
]


@pytest.mark.parametrize(("name", "spoil", "spoil_data", "code"), CASES, ids=[c[0] for c in CASES])
def test_a_pod_declines_a_bad_task_and_answers_the_next(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    spoil: Callable[[dict[str, Any]], None] | None,
    spoil_data: Callable[[RoundWorker], None] | None,
    code: str,
) -> None:
    pods = Pods(monkeypatch, 4)
    worker, message, _ = pods.one()
    good_data = worker.data
    events: list[dict[str, Any]] = []
    worker.on_event = events.append
    bad = copy.deepcopy(message)
    if spoil is not None:
        spoil(bad)
    if spoil_data is not None:
        spoil_data(worker)
    assert declined(worker.handle(bad)) == code
    assert {"event": "declined", "round": message["round"], "code": code} in events
    worker.data = good_data
    reply = worker.handle(copy.deepcopy(message))
    assert reply is not None and reply["type"] == "round.reply"
    data_events = [e for e in events if e.get("event") == "data"]
    assert data_events[-1]["used"] > 0 and data_events[-1]["set_aside"] == {}
