"""What a pod is asked: the task, each stage's message, and the end of a round.

The message shapes are the contract of :mod:`pods.agent.protocol`; this module fills them from
the database and the protocol state.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from consent.receipts import receipts_signed_for
from pods.agent.protocol import MessageType, RoundEnd, Task
from pods.key_log import key_log_for_round
from training.models import ModelRequest, RoundParticipant, TrainingRound
from training.modelspec import validate_spec
from training.secagg.encoding import Layout
from training.secagg.server import ServerRound
from training.secagg.wire import Stage
from training.shared.kept import Kept

from .transitions import OPEN_STATUSES, StageStep, step_of
from .valuation import candidates_of

Message = dict[str, object]
Payload = dict[str, Any]


def layout_for(model_request: ModelRequest, cohort: int, candidates: int = 0) -> Layout:
    """The masked vector's layout (:func:`pods.agent.layout.plan_layout`): the one the pod
    recomputes from the plan and checks, so the service can state no other."""
    from pods.agent.layout import plan_layout  # imports torch: only where a round opens

    return plan_layout(validate_spec(model_request.spec), cohort, candidates)


def task_for(training_round: TrainingRound) -> Task:
    """The task of a round's first stage (:class:`pods.agent.protocol.Task`)."""
    model_request = training_round.model_request
    base = training_round.base_version
    assert base is not None, "a round always starts from a model version"
    task = Task(
        request=str(model_request.pk),
        plan_hash=model_request.plan_hash,
        spec=model_request.spec,
        weights_url=f"/api/v1/pod/rounds/{training_round.pk}/weights",
        weights_sha256=base.sha256,
        base_round=base.round_number,
        initial_weights_sha256=model_request.weights_sha256,
        masked_input_url=f"/api/v1/pod/rounds/{training_round.pk}/masked-input",
        seed=int(training_round.metrics["seed"]),
    )
    candidates = candidates_of(base)
    if candidates:  # group value: the last round's models without one group each
        task["candidates"] = [
            {
                "label": str(c["label"]),
                "url": f"/api/v1/pod/rounds/{training_round.pk}/candidates/{i}",
                "sha256": str(c["sha256"]),
            }
            for i, c in enumerate(candidates)
        ]
    if base.control_sha256:  # SCAFFOLD after its first round: the service's c, like the weights
        task["control_url"] = f"/api/v1/pod/rounds/{training_round.pk}/control"
        task["control_sha256"] = base.control_sha256
    return task


class KeyLogProofs:
    """The key-log part of a round's ``share_keys`` messages: one signed head for the whole
    cohort, a consistency proof from the head each pod holds, and each neighbour's log entry
    with its inclusion proof — so a pod accepts no identity key the service made up unseen."""

    def __init__(self, participants: list[RoundParticipant]) -> None:
        self.proofs = key_log_for_round(pod_ids=[p.pod_id for p in participants])
        self.pod_of = {p.index: str(p.pod_id) for p in participants}
        self.known = {p.index: p.key_log_size for p in participants}
        self._from: dict[int, dict[str, Any]] = {}  # one head and proof per size pods hold

    def attach(self, index: int, payload: Payload) -> Payload:
        known = self.known.get(index, 0)
        if known not in self._from:
            self._from[known] = self.proofs.for_pod(known_size=known)
        payload["key_log"] = self._from[known]
        for v, advert in payload.get("adverts", {}).items():
            pod_id = self.pod_of[int(v)]
            advert["pod_id"] = pod_id
            advert["key_log"] = self.proofs.proofs.get(pod_id)  # none: neighbours refuse it
        return payload


def first_receipts(
    training_round: TrainingRound, participants: list[RoundParticipant]
) -> dict[int, Any]:
    """The owners' signed consent receipts for the participants whose pods took part in no
    earlier round of the request, by index: they ride the task's message (one bulk read and
    a signature each) instead of one HTTP request per pod. A pod checks a receipt whichever
    way it came (signature, request, plan, fields); one that held it already, or that
    restarted since, fetches it as before when it has none that fits."""
    earlier = set(
        RoundParticipant.objects.filter(
            round__model_request_id=training_round.model_request_id,
            round__number__lt=training_round.number,
            pod_id__in=[p.pod_id for p in participants],
        ).values_list("pod_id", flat=True)
    )
    new = {p.user_id: p.index for p in participants if p.pod_id not in earlier}
    if not new:
        return {}
    signed = receipts_signed_for(training_round.model_request_id, new)
    return {new[user_id]: receipt for user_id, receipt in signed.items()}


class StageParts:
    """What every pod's message of one open stage shares, made once for the cohort: the
    deadline, the task and its new participants' receipts (the first stage, when given its
    ``participants``) and the key-log proofs (the key-sharing stage; they need the round's
    ``participants``, all of them, dropped or not)."""

    def __init__(
        self,
        training_round: TrainingRound,
        step: StageStep,
        participants: list[RoundParticipant] | None = None,
    ) -> None:
        deadline = training_round.stage_deadline
        self.deadline = deadline.isoformat() if deadline else None
        self.task = task_for(training_round) if step.stage is Stage.ADVERTISE_KEYS else None
        self.receipts: dict[int, Any] = {}
        if self.task is not None and participants is not None:
            self.receipts = first_receipts(training_round, participants)
        self.key_log = None
        if step.stage is Stage.SHARE_KEYS:
            if participants is None:
                participants = list(training_round.participants.defer("reply"))
            self.key_log = KeyLogProofs(participants)


def stage_message(
    training_round: TrainingRound,
    server: ServerRound,
    index: int,
    step: StageStep,
    parts: StageParts | None = None,
) -> Message:
    """What pod ``index`` is asked at ``step`` (the first stage also carries the task; the
    key-sharing stage carries the key-log proofs of the neighbours' identity keys); ``parts``:
    the stage's shared parts, when sending to more than one pod."""
    if parts is None:
        parts = StageParts(training_round, step)
    payload = step.request(server, index)
    if parts.key_log is not None:
        payload = parts.key_log.attach(index, payload)
    message: Message = {
        "type": MessageType.ROUND_STAGE,
        "round": training_round.pk,
        "stage": step.stage.value,
        "deadline": parts.deadline,
        "payload": payload,
    }
    if parts.task is not None:
        message["task"] = parts.task
        if index in parts.receipts:
            message["receipt"] = parts.receipts[index]
    return message


def round_end(round_id: int, status: RoundEnd) -> Message:
    return {"type": MessageType.ROUND_END, "round": round_id, "status": status}


def waiting_participants(pod_id: uuid.UUID | str) -> list[RoundParticipant]:
    """This pod's places in running rounds whose current stage it has not answered."""
    waiting = RoundParticipant.objects.filter(
        pod_id=pod_id,
        dropped_at_stage="",
        round__status__in=list(OPEN_STATUSES),
        round__model_request__status=ModelRequest.Status.TRAINING,
    ).select_related("round__model_request", "round__base_version")
    # The protocol state is read (and parsed) once per open stage, not per pod: _open_stage.
    waiting = waiting.defer("reply", "round__secagg_state")
    out = []
    for participant in waiting:
        step = step_of(participant.round.status)
        if step is not None and participant.stage_reached == step.waiting:
            out.append(participant)
    return out


def stage_messages_for(pod_id: uuid.UUID | str) -> list[Message]:
    """The current stage of every running round this pod is in and has not answered yet.

    Sent again when the pod (re)connects: a connection that dropped mid-stage, or a server
    restarted mid-round, then costs the pod nothing as long as the stage's deadline holds.
    """
    messages = []
    for participant in waiting_participants(pod_id):
        training_round = participant.round
        step = step_of(training_round.status)
        opened = open_stage(training_round, step) if step is not None else None
        if step is None or opened is None:
            continue
        server, parts = opened
        messages.append(stage_message(training_round, server, participant.index, step, parts))
    return messages


# The open stage of the last few rounds asked again (a pod reconnecting, the clock's resend):
# its protocol state and the parts every pod's message shares, the same for the whole cohort
# (rebuilt per pod, a cohort reconnecting mid-stage cost O(n²): n states parsed, n key-log
# proofs built for each pod).
_OPEN_STAGES: Kept[tuple[int, str, str, str], tuple[ServerRound, StageParts]] = Kept(8)


def _stage_key(training_round: TrainingRound) -> tuple[int, str, str, str]:
    """The round, its start, its status and the stage's deadline: the state changes only when
    a stage closes, which sets a new deadline (answers wait in the participant rows)."""
    return (
        training_round.pk,
        str(training_round.started_at),
        training_round.status,
        str(training_round.stage_deadline),
    )


def open_stage(
    training_round: TrainingRound, step: StageStep
) -> tuple[ServerRound, StageParts] | None:
    """The round's protocol state and its open stage's shared parts (None: the round has no
    state yet); the state is read (and parsed) once per stage and process."""
    key = _stage_key(training_round)
    cached = _OPEN_STAGES.get(key)
    if cached is None:
        state = training_round.secagg_state  # deferred by the callers: read here, once
        if not state:
            return None
        cached = ServerRound.from_dict(state), StageParts(training_round, step)
        _keep(key, cached)
    return cached


def stage_opened(training_round: TrainingRound, server: ServerRound, parts: StageParts) -> None:
    """Remember the stage a close (or a round's opening) has just asked, once it commits with
    ``training_round``: asking again then needs no parse of its state. ``server`` is not
    changed after this."""
    key = _stage_key(training_round)
    transaction.on_commit(lambda: _keep(key, (server, parts)))


def _keep(key: tuple[int, str, str, str], opened: tuple[ServerRound, StageParts]) -> None:
    _OPEN_STAGES.put(key, opened)
