"""An answer batch costs the same few statements however many answers it holds."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pods.models import Pod
from tests.factories import open_request
from tests.training.rounds.test_engine import consenting_online_pod
from training.models import RoundParticipant, RoundStatus, TrainingRound
from training.rounds import answers, opening, statements

pytestmark = pytest.mark.django_db(transaction=True)


def opened(n: int) -> tuple[int, list[uuid.UUID]]:
    model_request = open_request(cohort_size=n, min_participants=n)
    for i in range(n):
        consenting_online_pod(model_request, f"p{i}")
    training_round = opening.request_try_start(model_request)
    assert training_round is not None
    pods = list(
        RoundParticipant.objects.filter(round=training_round)
        .order_by("index")
        .values_list("pod_id", flat=True)
    )
    return training_round.pk, pods


def advert(pod_id: uuid.UUID | str, round_id: int, n: int = 0) -> answers.StageReply:
    return answers.StageReply(pod_id, round_id, "advertise_keys", {"n": n})


def test_a_batch_of_many_answers_costs_the_statements_of_one() -> None:
    round_id, pods = opened(12)
    with CaptureQueriesContext(connection) as one:
        assert answers.round_replies([advert(pods[0], round_id)]) == [True]
    # Pod ids as the consumers give them (text), as UUIDs, and a stranger's.
    batch = [advert(str(p), round_id) for p in pods[1:6]] + [
        advert(p, round_id) for p in pods[6:-1]
    ]
    with CaptureQueriesContext(connection) as many:
        taken = answers.round_replies([*batch, advert(uuid.uuid4(), round_id)])
    assert taken == [True] * (len(pods) - 2) + [False]
    assert len(many) == len(one) <= 6
    stages = dict(
        RoundParticipant.objects.filter(round_id=round_id).values_list("pod", "stage_reached")
    )
    assert [stages[p] for p in pods] == ["advertise_keys"] * (len(pods) - 1) + ["selected"]
    assert TrainingRound.objects.get(pk=round_id).status == RoundStatus.ADVERTISING  # one left


def test_repeats_are_ignored_and_a_different_second_answer_drops_the_pod() -> None:
    round_id, pods = opened(4)
    assert answers.round_replies([advert(p, round_id) for p in pods[:3]]) == [True] * 3
    assert answers.round_replies([advert(pods[0], round_id), advert(pods[1], round_id, 1)]) == [
        True,
        True,
    ]
    rows = {
        p.pod_id: p for p in RoundParticipant.objects.filter(round_id=round_id).order_by("index")
    }
    assert not rows[pods[0]].dropped and rows[pods[0]].reply == {"n": 0}
    assert rows[pods[1]].dropped_at_stage == "advertise_keys"
    assert rows[pods[1]].drop_reason == "out_of_order" and rows[pods[1]].reply is None
    # The last one's answer closes the stage (the one dropped is not waited for; the made-up
    # adverts then end the round).
    assert answers.round_replies([advert(pods[3], round_id)]) == [True]
    assert TrainingRound.objects.get(pk=round_id).status != RoundStatus.ADVERTISING


def test_the_statements_read_what_the_orm_reads() -> None:
    round_id, pods = opened(3)
    found = statements.answering(round_id, [pods[0], str(pods[1]), pods[1].hex, "not a uuid"])
    assert set(found) == {str(pods[0]), str(pods[1])}
    for pod_id, participant in found.items():
        row = RoundParticipant.objects.get(round_id=round_id, pod_id=pod_id)
        assert (participant.pk, participant.index, participant.user_id) == (
            row.pk,
            row.index,
            row.user_id,
        )
        assert participant.reply == row.reply  # deferred: read when touched
    Pod.objects.filter(pk=pods[2]).update(status=Pod.Status.REVOKED)
    storing = statements.answering(round_id, pods, statements.STORING, pod_status=True)
    with CaptureQueriesContext(connection) as read:
        active = {key: (p.pod.is_active, p.masked_input.name) for key, p in storing.items()}
    assert len(read) == 0  # what storing an input judges is read with the participants
    assert active == {str(pods[0]): (True, ""), str(pods[1]): (True, ""), str(pods[2]): (False, "")}
    assert statements.lock_round_values(round_id, "status") == (RoundStatus.ADVERTISING,)
    assert statements.lock_round_values(round_id + 1000, "status") is None
    assert statements.anyone_waiting(round_id, "selected")
    assert not statements.anyone_waiting(round_id, "advertise_keys")
