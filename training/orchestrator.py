"""The orchestrator: a model request's rounds as a state machine persisted in the database.

recruiting → training when enough pods with a usable consent are online; each round runs the
four SecAgg+ stages (``training.secagg``) with a deadline per stage — a silent pod is dropped,
never waited for — and a round whose survivors fall below the threshold aborts (revealing
nothing) and is retried with a fresh cohort, a bounded number of times. Consent is re-checked
at every stage's close and on every upload, and a withdrawal or "pause all training" drops the
pod at once.

A pod's answer to a stage waits in its participant row until the stage closes; only then does
the protocol state (:class:`training.secagg.server.ServerRound`, persisted as JSON on the round)
take all answers in, so one answer costs a few small queries, not a rewrite of the state.

Rows are locked in a fixed order (the round, then its participants by index); messages to pods
leave only after the transaction commits.
"""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from consent.selectors import usable_consents
from pods.models import Pod
from pods.presence import online_pods
from pods.services import pod_group

from . import progress
from .models import ModelRequest, ModelVersion, RoundParticipant, RoundStatus, TrainingRound

logger = logging.getLogger(__name__)

Message = dict[str, Any]

Status = TrainingRound.Status
STAGE_OF_STATUS = {
    Status.ADVERTISING: "advertise_keys",
    Status.SHARING: "share_keys",
    Status.COLLECTING: "masked_input",
    Status.UNMASKING: "unmask",
}
NEXT_STATUS = {
    Status.ADVERTISING: Status.SHARING,
    Status.SHARING: Status.COLLECTING,
    Status.COLLECTING: Status.UNMASKING,
}
# The stage a live participant has reached while the round waits for its answer.
EXPECTED_BEFORE = {
    Status.ADVERTISING: RoundParticipant.Stage.SELECTED,
    Status.SHARING: RoundParticipant.Stage.ADVERTISED,
    Status.COLLECTING: RoundParticipant.Stage.SHARED,
    Status.UNMASKING: RoundParticipant.Stage.MASKED,
}
REACHED = {
    Status.ADVERTISING: RoundParticipant.Stage.ADVERTISED,
    Status.SHARING: RoundParticipant.Stage.SHARED,
    Status.UNMASKING: RoundParticipant.Stage.UNMASKED,
}


# -- delivery ---------------------------------------------------------------------------------


def deliver(pod_id: uuid.UUID | str, message: dict[str, Any]) -> None:
    """Send a message to a pod's live connection (after commit; tests replace this)."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(pod_group(pod_id), {"type": "pod.send", "message": message})


def _send_after_commit(pod_id: uuid.UUID, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: deliver(pod_id, message))


# -- who may take part -------------------------------------------------------------------------


def eligible_pods(model_request: ModelRequest, now: datetime) -> list[Pod]:
    """One online pod per person whose consent is given, unexpired and not paused."""
    consents = usable_consents(model_request, now)
    chosen: dict[int, Pod] = {}
    pods = (
        online_pods().filter(owner__in=consents.values("user")).order_by("owner_id", "created_at")
    )
    bound = dict(consents.exclude(pod=None).values_list("user_id", "pod_id"))
    slug = model_request.data_category.slug
    for pod in pods:
        if bound.get(pod.owner_id) not in (None, pod.pk):
            continue  # the person chose another pod for this request
        if pod.owner_id not in chosen and (bound.get(pod.owner_id) == pod.pk or pod.holds(slug)):
            chosen[pod.owner_id] = pod
    return list(chosen.values())


def usable(model_request: ModelRequest, participant: RoundParticipant, now: datetime) -> bool:
    return (
        participant.pod.is_active
        and usable_consents(model_request, now).filter(user_id=participant.user_id).exists()
    )


# -- rounds ------------------------------------------------------------------------------------


def _layout(model_request: ModelRequest, cohort: int) -> Any:
    from training.modelspec import validate_spec, vector_size
    from training.secagg.encoding import Layout

    spec = validate_spec(model_request.spec)
    dp = model_request.dp
    return Layout.for_training(
        model_dim=vector_size(spec),
        max_clients=cohort,
        clip_norm=float(dp["clip_norm"]) if dp else settings.ROUND_UPDATE_CLIP,
        max_weight=1,
        max_eval_examples=settings.ROUND_MAX_EXAMPLES,
    )


def _task(
    model_request: ModelRequest, training_round: TrainingRound, min_survivors: int
) -> dict[str, Any]:
    base = training_round.base_version
    assert base is not None
    return {
        "request": str(model_request.pk),
        "plan_hash": model_request.plan_hash,
        "spec": model_request.spec,
        "weights_url": f"/api/v1/pod/rounds/{training_round.pk}/weights",
        "weights_sha256": base.sha256,
        "base_round": base.round_number,
        "initial_weights_sha256": model_request.weights_sha256,
        "masked_input_url": f"/api/v1/pod/rounds/{training_round.pk}/masked-input",
        "weighting": "uniform" if model_request.dp else "examples",
        "max_examples": settings.ROUND_MAX_EXAMPLES,
        "clip_norm": float(model_request.dp["clip_norm"])
        if model_request.dp
        else settings.ROUND_UPDATE_CLIP,
        "dp": model_request.dp,
        "min_survivors": min_survivors,
        "seed": int(training_round.metrics["seed"]),
    }


@transaction.atomic
def round_open(
    model_request: ModelRequest, *, number: int, attempt: int, now: datetime
) -> TrainingRound | None:
    """Draw a cohort at random from eligible pods and start AdvertiseKeys, or wait."""
    from training.secagg.server import ServerRound

    pool = eligible_pods(model_request, now)
    if len(pool) < model_request.min_participants:
        return None
    cohort = random.SystemRandom().sample(pool, min(model_request.cohort_size, len(pool)))
    layout = _layout(model_request, len(cohort))
    base = model_request.versions.order_by("-round_number").first()
    training_round = TrainingRound.objects.create(
        model_request=model_request,
        number=number,
        attempt=attempt,
        status=Status.ADVERTISING,
        cohort_size=len(cohort),
        vector_length=layout.length,
        base_version=base,
        stage_deadline=now + timedelta(seconds=settings.ROUND_STAGE_SECONDS),
        # The training seed is public (pods train deterministically; anyone may reproduce).
        metrics={
            "sample_rate": len(cohort) / len(pool),
            "seed": random.SystemRandom().randrange(2**31),
        },
    )
    identity = {}
    for index, pod in enumerate(sorted(cohort, key=lambda p: str(p.pk)), start=1):
        RoundParticipant.objects.create(
            round=training_round, pod=pod, user_id=pod.owner_id, index=index
        )
        identity[index] = bytes(pod.public_key)
    min_survivors = model_request.min_participants
    server = ServerRound(
        round_id=f"{model_request.pk}/{number}/{attempt}",
        identity_keys=identity,
        threshold_fraction=model_request.secagg_threshold,
        min_survivors=min_survivors,
        layout=layout,
    )
    training_round.secagg_state = server.to_dict()
    training_round.save(update_fields=["secagg_state"])
    _progress(training_round, ModelRequest.Status.TRAINING)
    for participant in training_round.participants.all():
        _send_after_commit(
            participant.pod_id,
            _stage_message(training_round, server, participant.index, "advertise_keys"),
        )
    return training_round


def _stage_message(training_round: TrainingRound, server: Any, index: int, stage: str) -> Message:
    """What one pod is asked at a stage (the first stage also carries the task)."""
    request = {
        "advertise_keys": server.advertise_request,
        "share_keys": server.share_request,
        "masked_input": server.masked_request,
        "unmask": server.unmask_request,
    }[stage](index)
    deadline = training_round.stage_deadline
    message: Message = {
        "type": "round.stage",
        "round": training_round.pk,
        "stage": stage,
        "deadline": deadline.isoformat() if deadline else None,
        "payload": request,
    }
    if stage == "advertise_keys":
        model_request = training_round.model_request
        message["task"] = _task(model_request, training_round, model_request.min_participants)
    return message


def stage_messages_for(pod_id: uuid.UUID | str) -> list[Message]:
    """The current stage of every running round this pod is in and has not answered yet.

    Sent again when the pod (re)connects: a connection that dropped mid-stage, or a server
    restarted mid-round, then costs the pod nothing as long as the stage's deadline holds.
    """
    from training.secagg.server import ServerRound

    messages = []
    waiting = RoundParticipant.objects.filter(
        pod_id=pod_id,
        dropped_at_stage="",
        round__status__in=list(STAGE_OF_STATUS),
        round__model_request__status=ModelRequest.Status.TRAINING,
    ).select_related("round__model_request")
    for participant in waiting:
        training_round = participant.round
        status = Status(training_round.status)
        if participant.stage_reached != EXPECTED_BEFORE[status] or not training_round.secagg_state:
            continue
        server = ServerRound.from_dict(training_round.secagg_state)
        messages.append(
            _stage_message(training_round, server, participant.index, STAGE_OF_STATUS[status])
        )
    return messages


@transaction.atomic
def request_try_start(
    model_request: ModelRequest, now: datetime | None = None
) -> TrainingRound | None:
    now = now or timezone.now()
    locked = ModelRequest.objects.select_for_update().get(pk=model_request.pk)
    if locked.status != ModelRequest.Status.RECRUITING:
        return None
    training_round = round_open(locked, number=1, attempt=1, now=now)
    if training_round is not None:
        locked.status = ModelRequest.Status.TRAINING
        locked.save(update_fields=["status", "updated_at"])
    return training_round


def _progress(training_round: TrainingRound, request_status: str) -> None:
    progress.publish(
        training_round.model_request_id, progress.round_event(training_round, request_status)
    )


def _locked(round_id: int) -> tuple[TrainingRound, Any]:
    from training.secagg.server import ServerRound

    training_round = (
        TrainingRound.objects.select_for_update().select_related("model_request").get(pk=round_id)
    )
    state = training_round.secagg_state
    return training_round, ServerRound.from_dict(state) if state else None


def _drop(participant: RoundParticipant, stage: str, reason: str) -> None:
    if not participant.dropped_at_stage:
        participant.dropped_at_stage = stage
        participant.drop_reason = reason
        participant.reply = None
        participant.save(update_fields=["dropped_at_stage", "drop_reason", "reply"])


@transaction.atomic
def round_reply(*, pod_id: uuid.UUID | str, round_id: int, stage: str, payload: Any) -> bool:
    """A pod's answer to the current stage (advertise_keys, share_keys or unmask).

    The answer waits in the pod's participant row; the protocol state takes every answer in
    when the stage closes (:func:`round_advance`), which also re-checks consent. Per answer:
    the round row locked, one conditional update, one check whether all have answered — the
    round's state is not rewritten per message. False when the pod is not in that round.
    """
    training_round = (
        TrainingRound.objects.select_for_update().only("status").filter(pk=round_id).first()
    )
    if training_round is None:
        return False
    status = Status(training_round.status)
    current = STAGE_OF_STATUS.get(status)
    mine = RoundParticipant.objects.filter(round_id=round_id, pod_id=pod_id)
    if current is not None and stage == current != "masked_input" and isinstance(payload, dict):
        recorded = mine.filter(dropped_at_stage="", stage_reached=EXPECTED_BEFORE[status]).update(
            reply=payload, stage_reached=REACHED[status]
        )
        if recorded:
            if _all_answered(round_id, status):
                transaction.on_commit(lambda: round_advance(round_id, status))
            return True
    participant = mine.first()
    if participant is None:
        return False
    if _repeated(participant, stage, current, payload):
        return True  # asked again after a reconnection, the pod answered again: nothing new
    if not participant.dropped:
        # Out of order, malformed, or a different second answer to the current stage.
        _drop(participant, current or stage, "out_of_order")
        if current is not None and _all_answered(round_id, status):
            transaction.on_commit(lambda: round_advance(round_id, status))
    return True


_ORDER = list(RoundParticipant.Stage.values)  # selected, advertise_keys, ..., unmask


def _repeated(participant: RoundParticipant, stage: str, current: str | None, payload: Any) -> bool:
    """Whether an answer repeats one the pod gave already: the current stage's answer again,
    or any answer to a stage it answered that has closed since (that one is no longer read)."""
    if participant.dropped or stage not in _ORDER or stage == "masked_input":
        return False
    if _ORDER.index(participant.stage_reached) < _ORDER.index(stage):
        return False  # never answered that stage: out of order
    return stage != current or participant.reply == payload


def stage_answered(round_id: int, status: str) -> bool:
    """Whether every live participant has answered the round's current stage."""
    return _all_answered(round_id, Status(status))


def _all_answered(round_id: int, status: RoundStatus) -> bool:
    live = RoundParticipant.objects.filter(round_id=round_id, dropped_at_stage="")
    return (
        not live.filter(stage_reached=EXPECTED_BEFORE[status]).exists()
        and live.filter(stage_reached=REACHED.get(status, RoundParticipant.Stage.MASKED)).exists()
    )


def _still_consenting(
    model_request: ModelRequest, participants: list[RoundParticipant], now: datetime
) -> set[int]:
    """The participants' owners whose consent still covers the request (one query for the
    whole cohort)."""
    users = {p.user_id for p in participants}
    return set(
        usable_consents(model_request, now)
        .filter(user_id__in=users)
        .values_list("user_id", flat=True)
    )


def _take_answers(
    server: Any,
    status: RoundStatus,
    participants: list[RoundParticipant],
    model_request: ModelRequest,
    now: datetime,
) -> None:
    """Feed the stage's recorded answers into the protocol state, consent re-checked for each
    pod up to the close of collection; an answer the protocol refuses drops its pod with the
    protocol's reason."""
    from training.secagg.errors import SecAggError

    stage = STAGE_OF_STATUS[status]
    reached = REACHED.get(status, RoundParticipant.Stage.MASKED)
    consenting = _still_consenting(model_request, participants, now)
    for p in participants:
        if p.dropped or p.stage_reached != reached:
            continue
        # Once collection has closed the inputs in the sum are fixed (a withdrawal from then on
        # affects later rounds); unmasking shares only remove masks, so they are all taken.
        if status != Status.UNMASKING and (not p.pod.is_active or p.user_id not in consenting):
            _drop(p, stage, "consent_withdrawn_or_paused")
            if p.masked_input:  # its input stays out of the sum, like a pre-mask dropout
                p.masked_input.delete(save=False)
                p.save(update_fields=["masked_input"])
            continue
        try:
            if status == Status.ADVERTISING:
                server.receive_advert(p.index, p.reply or {})
            elif status == Status.SHARING:
                server.receive_shares(p.index, p.reply or {})
            elif status == Status.COLLECTING:
                server.receive_masked(p.index)
            else:
                server.receive_unmask(p.index, p.reply or {})
        except SecAggError as exc:
            _drop(p, stage, exc.code)


def _forget_answers(round_id: int) -> None:
    RoundParticipant.objects.filter(round_id=round_id, reply__isnull=False).update(reply=None)


def round_advance(round_id: int, closing: str, now: datetime | None = None) -> None:
    """Close the stage ``closing`` (a round status; dropping whoever did not answer) and start
    the next.

    Closing the unmasking stage moves the round to ``aggregating`` and hands the sum to the
    aggregation tree (:func:`shard_sum` per coordinate range, then :func:`round_finalize`).
    Idempotent: a round that has left that stage meanwhile (closed by another process, whose
    decision this one saw only as "all answered") is left alone — never is the next stage
    closed in its place.
    """
    from training.secagg.errors import AbortError

    now = now or timezone.now()
    with transaction.atomic():
        training_round, server = _locked(round_id)
        status = Status(training_round.status)
        if status != closing or status not in STAGE_OF_STATUS or server is None:
            return
        stage = STAGE_OF_STATUS[status]
        participants = list(training_round.participants.select_related("pod").order_by("index"))
        if training_round.model_request.status != ModelRequest.Status.TRAINING:
            _abort(training_round, participants, stage, "The request was stopped.", now)
            return
        _take_answers(server, status, participants, training_round.model_request, now)
        _forget_answers(round_id)
        state_before = server.to_dict()
        try:
            if status == Status.ADVERTISING:
                alive = set(server.close_advertise())
            elif status == Status.SHARING:
                alive = set(server.close_share())
            elif status == Status.COLLECTING:
                # The relayed envelopes (most of the state) were kept for pods asking again.
                server.forget_routed()
                alive = set(server.close_masked())
            else:
                alive = set(server.close_unmask().survivors)
        except AbortError as exc:
            waiting_for = EXPECTED_BEFORE[status]
            for p in participants:
                if not p.dropped and p.stage_reached == waiting_for:
                    _drop(p, stage, "silent")
            _abort(training_round, participants, stage, exc.message, now)
            return
        for p in participants:
            if p.index not in alive and not p.dropped and status != Status.UNMASKING:
                _drop(p, stage, "silent")
        logger.info(
            "round %s (%s/%s): %s closed, %d of %d pods go on",
            training_round.pk,
            training_round.number,
            training_round.attempt,
            stage,
            len(alive),
            len(participants),
        )
        if status == Status.UNMASKING:
            # Keep the state from before close_unmask: the root recomputes the plan from it.
            training_round.secagg_state = state_before
            training_round.status = Status.AGGREGATING
            training_round.survivors = len(alive)
            training_round.metrics = {**training_round.metrics, "shards_done": []}
            training_round.stage_deadline = now + timedelta(seconds=settings.ROUND_STAGE_SECONDS)
            training_round.save(
                update_fields=["secagg_state", "status", "survivors", "metrics", "stage_deadline"]
            )
            _progress(training_round, training_round.model_request.status)
            transaction.on_commit(lambda: _dispatch_shards(round_id))
            return
        training_round.status = NEXT_STATUS[status]
        training_round.stage_deadline = now + timedelta(seconds=settings.ROUND_STAGE_SECONDS)
        next_stage = STAGE_OF_STATUS[Status(training_round.status)]
        for p in participants:
            if p.index in alive:
                _send_after_commit(
                    p.pod_id, _stage_message(training_round, server, p.index, next_stage)
                )
        training_round.secagg_state = server.to_dict()
        training_round.save(update_fields=["status", "stage_deadline", "secagg_state"])
        _progress(training_round, training_round.model_request.status)


# -- the aggregation tree ----------------------------------------------------------------------


def _shards(training_round: TrainingRound) -> list[tuple[int, int]]:
    from training.secagg.aggregate import shard_ranges

    return shard_ranges(int(training_round.vector_length), settings.ROUND_AGGREGATION_SHARDS)


def _shard_path(round_id: int, index: int) -> str:
    return f"aggregates/round-{round_id}/shard-{index}.u32"


def _dispatch_shards(round_id: int, only_missing: bool = False) -> None:
    from . import tasks

    training_round = TrainingRound.objects.get(pk=round_id)
    done = set(training_round.metrics.get("shards_done", [])) if only_missing else set()
    for index in range(len(_shards(training_round))):
        if index not in done:
            tasks.aggregate_shard.delay(round_id, index)


def shard_sum(round_id: int, index: int) -> None:
    """One leaf of the aggregation tree: Σ of the survivors' masked inputs over one coordinate
    range, still masked (self masks and masks shared with dropped pods remain). Idempotent."""
    from django.core.files.storage import default_storage

    from training.secagg.aggregate import sum_range

    training_round = TrainingRound.objects.get(pk=round_id)
    if training_round.status != Status.AGGREGATING:
        return
    if index in training_round.metrics.get("shards_done", []):
        return
    start, stop = _shards(training_round)[index]
    # Exactly the inputs the protocol committed to when collection closed — a pod dropped
    # later (while unmasking) stays in the sum: its masks are removed like everyone's.
    committed = set(training_round.secagg_state.get("masked", []))
    survivors = list(training_round.participants.filter(index__in=committed).order_by("index"))
    if len(survivors) != len(committed) or not all(p.masked_input for p in survivors):
        with transaction.atomic():
            locked = TrainingRound.objects.select_for_update().get(pk=round_id)
            if locked.status == Status.AGGREGATING:
                everyone = list(locked.participants.order_by("index"))
                _abort(
                    locked, everyone, "aggregating", "A masked input is missing.", timezone.now()
                )
        return
    handles = [p.masked_input.open("rb") for p in survivors]
    try:
        partial = sum_range(handles, start, stop)
    finally:
        for handle in handles:
            handle.close()
    path = _shard_path(round_id, index)
    if default_storage.exists(path):
        default_storage.delete(path)  # a retried task rewrites the same sum
    default_storage.save(path, ContentFile(partial.astype("<u4").tobytes()))
    with transaction.atomic():
        locked = TrainingRound.objects.select_for_update().get(pk=round_id)
        if locked.status != Status.AGGREGATING:
            return
        done = sorted({*locked.metrics.get("shards_done", []), index})
        locked.metrics = {**locked.metrics, "shards_done": done}
        locked.save(update_fields=["metrics"])
        complete = len(done) == len(_shards(locked))
    if complete:
        from . import tasks

        tasks.finalize_round.delay(round_id)


def round_finalize(round_id: int, now: datetime | None = None) -> None:
    """The root: remove the masks from each shard sum, decode, update the model. Idempotent."""
    from django.core.files.storage import default_storage

    from training.secagg.errors import AbortError

    now = now or timezone.now()
    with transaction.atomic():
        training_round, server = _locked(round_id)
        if training_round.status != Status.AGGREGATING or server is None:
            return
        shards = _shards(training_round)
        if len(training_round.metrics.get("shards_done", [])) != len(shards):
            return
        participants = list(training_round.participants.select_related("pod").order_by("index"))
        if training_round.model_request.status != ModelRequest.Status.TRAINING:
            _abort(training_round, participants, "aggregating", "The request was stopped.", now)
            transaction.on_commit(lambda: _delete_shards(round_id, len(shards)))
            return
        try:
            plan = server.close_unmask()
        except AbortError as exc:  # cannot happen after a successful close; never half-apply
            _abort(training_round, participants, "aggregating", exc.message, now)
            return
        from training.secagg.aggregate import remove_masks

        pieces = []
        for index, (start, _stop) in enumerate(shards):
            with default_storage.open(_shard_path(round_id, index), "rb") as handle:
                partial = np.frombuffer(handle.read(), dtype="<u4").astype(np.uint32)
            pieces.append(remove_masks(partial, plan, start))
        _finish(training_round, server.layout, np.concatenate(pieces), participants, plan, now)
        transaction.on_commit(lambda: _delete_shards(round_id, len(shards)))


def _delete_shards(round_id: int, count: int) -> None:
    from django.core.files.storage import default_storage

    for index in range(count):
        path = _shard_path(round_id, index)
        if default_storage.exists(path):
            default_storage.delete(path)


def _abort(
    training_round: TrainingRound,
    participants: list[RoundParticipant],
    stage: str,
    reason: str,
    now: datetime,
) -> None:
    training_round.status = Status.ABORTED
    training_round.status_reason = reason
    training_round.finished_at = now
    training_round.secagg_state = {}
    training_round.save()
    _discard_inputs(participants)
    for p in participants:
        _send_after_commit(
            p.pod_id, {"type": "round.end", "round": training_round.pk, "status": "aborted"}
        )
    model_request = ModelRequest.objects.select_for_update().get(pk=training_round.model_request_id)
    if model_request.status != ModelRequest.Status.TRAINING:
        _progress(training_round, model_request.status)
        return  # cancelled meanwhile: nothing to retry, nothing to overwrite
    if training_round.attempt >= settings.ROUND_MAX_ATTEMPTS:
        model_request.status = ModelRequest.Status.FAILED
        model_request.status_reason = (
            f"Round {training_round.number} aborted {training_round.attempt} times: {reason}"
        )
        model_request.finished_at = now
        model_request.save()
        _progress(training_round, model_request.status)
        return
    _progress(training_round, model_request.status)
    transaction.on_commit(
        lambda: _reopen(model_request.pk, training_round.number, training_round.attempt + 1)
    )


def _reopen(request_id: uuid.UUID, number: int, attempt: int) -> None:
    with transaction.atomic():
        model_request = ModelRequest.objects.select_for_update().get(pk=request_id)
        if model_request.status == ModelRequest.Status.TRAINING:
            round_open(model_request, number=number, attempt=attempt, now=timezone.now())


def _discard_inputs(participants: list[RoundParticipant]) -> None:
    """Masked inputs are deleted once a round is aggregated or aborted."""
    for p in participants:
        if p.masked_input:
            p.masked_input.delete(save=False)
            p.save(update_fields=["masked_input"])


def _finish(
    training_round: TrainingRound,
    layout: Any,
    total: Any,
    participants: list[RoundParticipant],
    plan: Any,
    now: datetime,
) -> None:
    import torch

    from training.modelspec import dump_weights, load_weights, unflatten_state, validate_spec
    from training.modelspec.vectors import flatten_state
    from training.secagg.encoding import decode

    model_request = ModelRequest.objects.select_for_update().get(pk=training_round.model_request_id)
    survivors = [p for p in participants if p.index in set(plan.survivors)]
    totals = decode(total, layout)
    weight = float(totals["weight"][0])
    spec = validate_spec(model_request.spec)
    base = training_round.base_version
    assert base is not None
    with base.weights.open("rb") as handle:
        state = load_weights(handle.read(), spec)
    average = (totals["update"] / max(weight, 1e-12)).astype(np.float32)
    vector, optimizer_state = server_step(
        spec.training.server_optimizer,
        flatten_state(state, spec),
        average,
        _optimizer_state(base),
    )
    new_state = unflatten_state(vector, spec, like=state)
    blob = dump_weights(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in new_state.items()}
    )
    examples = float(totals["eval_examples"][0])
    metrics = {
        **{k: v for k, v in training_round.metrics.items() if k != "shards_done"},
        "participants": len(survivors),
        "weight_total": weight,
        "eval_examples": round(examples),
        "eval_loss": float(totals["eval_loss"][0]) / examples if examples else None,
        "eval_accuracy": float(totals["eval_correct"][0]) / examples if examples else None,
    }
    epsilon = None
    over_budget = False
    if model_request.dp:
        from training.secagg.dp import epsilon_of

        history = [
            (
                float(model_request.dp["noise_multiplier"]),
                float(r.metrics.get("sample_rate", 1.0)),
                1,
            )
            for r in model_request.rounds_run.filter(status=Status.COMPLETED)
        ] + [(float(model_request.dp["noise_multiplier"]), float(metrics["sample_rate"]), 1)]
        epsilon = epsilon_of(history, float(model_request.dp["delta"]))
        model_request.epsilon_spent = epsilon
        # Stop before the budget is exceeded: one more round like this one must still fit.
        over_budget = epsilon_of([*history, history[-1]], float(model_request.dp["delta"])) > float(
            model_request.dp["target_epsilon"]
        )
    version = ModelVersion(
        model_request=model_request,
        round_number=training_round.number,
        sha256=hashlib.sha256(blob).hexdigest(),
        metrics=metrics,
        participants=len(survivors),
        epsilon=epsilon,
    )
    version.weights.save(
        f"round-{training_round.number}.safetensors", ContentFile(blob), save=False
    )
    if optimizer_state is not None:
        version.optimizer_state.save(
            f"round-{training_round.number}-server.safetensors",
            ContentFile(_dump_vectors(optimizer_state)),
            save=False,
        )
    version.save()
    training_round.status = Status.COMPLETED
    training_round.survivors = len(survivors)
    training_round.metrics = metrics
    training_round.epsilon = epsilon
    training_round.finished_at = now
    training_round.secagg_state = {}
    training_round.save()
    _discard_inputs(participants)
    model_request.current_round = training_round.number
    done = training_round.number >= model_request.rounds
    if not done and model_request.dp and over_budget:
        done = True
        model_request.status_reason = (
            f"Stopped after round {training_round.number}: another round would exceed the "
            f"privacy budget (ε ≤ {model_request.dp['target_epsilon']})."
        )
    if done:
        model_request.status = ModelRequest.Status.COMPLETED
        model_request.finished_at = now
    model_request.save()
    _progress(training_round, model_request.status)
    for p in participants:
        _send_after_commit(
            p.pod_id, {"type": "round.end", "round": training_round.pk, "status": "completed"}
        )
    if not done:
        number = training_round.number + 1
        transaction.on_commit(lambda: _reopen(model_request.pk, number, 1))


# -- server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization") --------------------


def server_step(
    optimizer: Any, current: Any, average: Any, state: dict[str, Any] | None
) -> tuple[Any, dict[str, Any] | None]:
    """Apply the aggregate: FedAvg adds the average update; FedAdam treats it as a pseudo-
    gradient with server-side first and second moments (kept between rounds)."""
    if optimizer.get("type") != "fedadam":
        return (current + average).astype(np.float32), None
    beta1, beta2 = (float(b) for b in optimizer["betas"])
    lr, eps = float(optimizer["lr"]), float(optimizer["eps"])
    m = state["m"] if state else np.zeros_like(average)
    v = state["v"] if state else np.full_like(average, eps * eps)
    m = beta1 * m + (1 - beta1) * average
    v = beta2 * v + (1 - beta2) * np.square(average)
    new = current + lr * m / (np.sqrt(v) + eps)
    return new.astype(np.float32), {"m": m.astype(np.float32), "v": v.astype(np.float32)}


def _dump_vectors(vectors: dict[str, Any]) -> bytes:
    from safetensors.numpy import save

    return bytes(save({k: np.ascontiguousarray(v) for k, v in vectors.items()}))


def _optimizer_state(version: ModelVersion) -> dict[str, Any] | None:
    from safetensors.numpy import load

    if not version.optimizer_state:
        return None
    with version.optimizer_state.open("rb") as handle:
        return dict(load(handle.read()))


def rounds_tick(now: datetime | None = None) -> None:
    """The clock of every round (run every few seconds: Celery beat, or the in-process ticker).

    Closes stages past their deadline (dropping silent pods) and stages every pod has answered
    whose close was lost (a process killed between the last answer and the close),
    re-dispatches aggregation shards that a killed worker never finished, opens the next round
    of a training request that has none running (e.g. after a retry found too few pods
    online), and starts requests that can.
    """
    now = now or timezone.now()
    for round_id, status, deadline in TrainingRound.objects.filter(
        status__in=list(STAGE_OF_STATUS)
    ).values_list("pk", "status", "stage_deadline"):
        if (deadline is not None and deadline <= now) or stage_answered(round_id, status):
            round_advance(round_id, status, now)
    for training_round in TrainingRound.objects.filter(
        status=Status.AGGREGATING, stage_deadline__lte=now
    ):
        if len(training_round.metrics.get("shards_done", [])) == len(_shards(training_round)):
            round_finalize(training_round.pk, now)
        else:
            _dispatch_shards(training_round.pk, only_missing=True)
    active = TrainingRound.objects.exclude(status__in=[Status.COMPLETED, Status.ABORTED])
    for model_request in ModelRequest.objects.filter(status=ModelRequest.Status.TRAINING).exclude(
        rounds_run__in=active
    ):
        _resume(model_request, now)
    for model_request in ModelRequest.objects.filter(status=ModelRequest.Status.RECRUITING):
        request_try_start(model_request, now)


def _resume(model_request: ModelRequest, now: datetime) -> None:
    """Open the round a training request is waiting for (its next number, or a retry)."""
    with transaction.atomic():
        locked = ModelRequest.objects.select_for_update().get(pk=model_request.pk)
        if locked.status != ModelRequest.Status.TRAINING:
            return
        last = locked.rounds_run.order_by("-number", "-attempt").first()
        if last is not None and last.status not in (Status.COMPLETED, Status.ABORTED):
            return
        if last is None or last.status == Status.COMPLETED:
            number, attempt = (last.number + 1 if last else 1), 1
        else:
            number, attempt = last.number, last.attempt + 1
        if number > locked.rounds:
            return
        round_open(locked, number=number, attempt=attempt, now=now)


# -- pods leaving ------------------------------------------------------------------------------


@transaction.atomic
def round_decline(*, pod: Pod, round_id: int, code: str) -> None:
    """A pod refused the task (its own consent check, no data...): drop it from the round."""
    training_round = TrainingRound.objects.select_for_update().get(pk=round_id)
    participant = training_round.participants.filter(pod=pod).first()
    if participant is None or participant.dropped:
        return
    stage = STAGE_OF_STATUS.get(Status(training_round.status), str(training_round.status))
    _drop(participant, stage, f"declined:{code}"[:100])
    status = training_round.status
    if status in STAGE_OF_STATUS and stage_answered(round_id, status):
        transaction.on_commit(lambda: round_advance(round_id, status))


def user_leaves_rounds(*, user_id: int, model_request_id: Any = None, reason: str) -> int:
    """Drop a person's pods from running rounds at once (withdrawal, or "pause all training").

    Their masked input, if already sent, stays out of the sum only if the round is still
    collecting; after that the protocol has already committed to the survivor set.
    """
    running = RoundParticipant.objects.filter(
        user_id=user_id,
        dropped_at_stage="",
        round__status__in=[Status.ADVERTISING, Status.SHARING, Status.COLLECTING],
        round__model_request__status=ModelRequest.Status.TRAINING,
    )
    if model_request_id is not None:
        running = running.filter(round__model_request_id=model_request_id)
    dropped = 0
    for round_id in set(running.values_list("round_id", flat=True)):
        with transaction.atomic():
            training_round = TrainingRound.objects.select_for_update().get(pk=round_id)
            if training_round.status not in STAGE_OF_STATUS:
                continue
            stage = STAGE_OF_STATUS[Status(training_round.status)]
            for participant in training_round.participants.filter(
                user_id=user_id, dropped_at_stage=""
            ):
                # Dropped before its stage closes: the state never takes its answer in, and a
                # masked input already stored is left out like a pre-mask dropout's.
                _drop(participant, stage, reason)
                if participant.masked_input:
                    participant.masked_input.delete(save=False)
                    participant.save(update_fields=["masked_input"])
                dropped += 1
                _send_after_commit(
                    participant.pod_id,
                    {"type": "round.end", "round": round_id, "status": "left"},
                )
            status = training_round.status
            if stage_answered(round_id, status):
                transaction.on_commit(
                    lambda rid=round_id, closing=status: round_advance(rid, closing)  # type: ignore[misc]
                )
    return dropped
