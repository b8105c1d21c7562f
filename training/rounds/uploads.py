"""Masked inputs: a pod's masked vector, over HTTP (streamed) or as a binary frame on its channel.

The service stores each vector as it arrived (uint32, little-endian), once per pod and round,
and never decodes it alone: only shard sums over many pods are ever combined (DESIGN.md
section 5). Both ways check the same things, in the same order, with the same error codes: the
pod is in the round, has not sent an input yet (a repeat of the stored one is taken as stored),
the round is collecting and the pod has shared its keys, its owner's consent still covers the
round, the length is exact and the SHA-256 matches.
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from django.db import transaction
from django.utils import timezone

from dataspace.errors import Conflict, DomainError, NotFound
from dataspace.rows import update_rows
from pods.models import Pod
from training.models import ModelRequest, RoundParticipant, RoundStatus, TrainingRound

from . import closing, statements
from .cohort import may_take_part, still_consenting
from .files import input_name, write_input
from .locking import ROUND_STATE, lock_round_row

CHUNK = 1 << 20


def masked_input_store(
    *, pod: Pod, round_id: int, stream: BinaryIO, length: int | None, sha256: str
) -> RoundParticipant:
    """Store one pod's masked vector sent over HTTP (streamed to storage)."""
    participant = (
        RoundParticipant.objects.select_related("round__model_request", "pod")
        # Not the round's protocol state (all routed shares, until collection closes) nor the
        # plan's JSON: an upload needs neither, and decoding them cost more than the upload.
        .defer(*ROUND_STATE, "reply")
        .filter(round_id=round_id, pod=pod)
        .first()
    )
    if participant is None:
        raise NotFound("This pod is not in that round.", code="not_in_round")
    training_round = participant.round
    _check_may_upload(training_round, participant)
    if not may_take_part(training_round.model_request, participant, timezone.now()):
        raise Conflict("The owner's consent no longer covers this round.", code="consent_withdrawn")
    expected = training_round.vector_length * 4
    if length != expected:
        raise DomainError(
            f"A masked input is exactly {expected} bytes.", code="wrong_length", status_code=400
        )
    if len(sha256) != 64:
        raise DomainError("X-Content-SHA256 must be 64 hex digits.", code="missing_checksum")
    digest = hashlib.sha256()
    received = 0
    with tempfile.TemporaryFile() as spool:
        while chunk := stream.read(min(CHUNK, expected - received + 1)):
            received += len(chunk)
            if received > expected:
                break
            digest.update(chunk)
            spool.write(chunk)
        if received != expected:
            raise DomainError(
                f"Received {received} bytes, expected {expected}.", code="wrong_length"
            )
        if not hmac.compare_digest(digest.hexdigest(), sha256.lower()):
            raise DomainError("The body does not match X-Content-SHA256.", code="checksum_mismatch")
        spool.seek(0)
        # One transaction, locks in the engine's order (the round, then the participant): a
        # stage cannot close between storing the input and recording it.
        with transaction.atomic():
            locked_round = lock_round_row(training_round.pk)
            assert locked_round is not None
            locked = RoundParticipant.objects.select_for_update().get(pk=participant.pk)
            _check_may_upload(locked_round, locked)
            locked.masked_input = _store(training_round.pk, locked.index, spool)
            locked.masked_sha256 = digest.hexdigest()
            locked.stage_reached = RoundParticipant.Stage.MASKED
            locked.save(update_fields=["masked_input", "masked_sha256", "stage_reached"])
            closing.close_when_answered(locked_round.pk, RoundStatus.COLLECTING)
    return locked


def _store(round_id: int, index: int, body: bytes | memoryview | BinaryIO) -> str:
    """Write a pod's input under its one name for the round (what a killed attempt left
    there is replaced, and the round's end removes it if nothing does); the name to record."""
    name = input_name(round_id, index)
    write_input(name, body)
    return name


def _check_may_upload(training_round: TrainingRound, participant: RoundParticipant) -> None:
    # First: a pod retrying an upload whose answer it lost learns the input is stored, even if
    # its upload was the last one and collection has closed since (pods.agent.rounds._upload).
    if participant.masked_input:
        raise Conflict("This pod already sent its masked input.", code="already_uploaded")
    if training_round.status != RoundStatus.COLLECTING:
        raise Conflict("The round is not collecting masked inputs.", code="wrong_stage")
    if participant.dropped or participant.stage_reached != RoundParticipant.Stage.SHARED:
        raise Conflict("This pod cannot send a masked input now.", code="wrong_stage")


@dataclass(frozen=True)
class MaskedFrame:
    """A masked input that came as a binary frame on the pod's control channel."""

    pod_id: uuid.UUID | str
    round_id: int
    sha256: str  # hex, as the pod declared it
    body: bytes | memoryview  # a view of the frame as received: never copied


def masked_frames_store(frames: Sequence[MaskedFrame]) -> list[str | None]:
    """Store masked inputs that came on pods' channels, in the order given: for each, None
    once stored (or when it repeats the input stored), else the error code an HTTP upload
    would get.

    One transaction per round in the batch, as :func:`training.rounds.answers.round_replies`:
    the round's row locked once, the pods' rows and their owners' consents read in one query
    each, every stored input recorded in one UPDATE, one "all answered?" check.
    """
    results: list[str | None] = [None] * len(frames)
    by_round: dict[int, list[int]] = {}
    for position, frame in enumerate(frames):
        by_round.setdefault(frame.round_id, []).append(position)
    for round_id in sorted(by_round):
        positions = by_round[round_id]
        codes = _frames_to_round(round_id, [frames[i] for i in positions])
        for position, code in zip(positions, codes, strict=True):
            results[position] = code
    return results


def _frames_to_round(round_id: int, frames: list[MaskedFrame]) -> list[str | None]:
    # Hashed before the lock is taken: the lock is held only for the checks and the writes.
    digests = [hashlib.sha256(frame.body).hexdigest() for frame in frames]
    with transaction.atomic():
        locked = statements.lock_round_values(
            round_id, "status", "vector_length", "model_request_id"
        )
        if locked is None:
            return ["not_in_round"] * len(frames)
        status, vector_length, request_id = locked
        training_round = TrainingRound(
            pk=round_id, status=status, vector_length=vector_length, model_request_id=request_id
        )
        mine = statements.answering(
            round_id, [f.pod_id for f in frames], statements.STORING, pod_status=True
        )
        # The request's id is all the consent query needs (no read of the request's row).
        consenting = still_consenting(
            ModelRequest(pk=request_id), list(mine.values()), timezone.now()
        )
        expected = training_round.vector_length * 4
        stored: dict[int, RoundParticipant] = {}
        codes: list[str | None] = []
        for frame, digest in zip(frames, digests, strict=True):
            participant = mine.get(statements.pod_key(frame.pod_id))
            code = _refusal(training_round, participant, frame, digest, expected, consenting)
            codes.append(code)
            if code is not None or participant is None or participant.masked_input:
                continue  # refused, or a repeat of the input stored
            participant.masked_input = _store(round_id, participant.index, frame.body)
            participant.masked_sha256 = digest
            participant.stage_reached = RoundParticipant.Stage.MASKED
            stored[participant.pk] = participant
        if stored:
            update_rows(list(stored.values()), ["masked_input", "masked_sha256", "stage_reached"])
            closing.close_when_answered(round_id, RoundStatus.COLLECTING)
    return codes


def _refusal(
    training_round: TrainingRound,
    participant: RoundParticipant | None,
    frame: MaskedFrame,
    digest: str,
    expected: int,
    consenting: set[int],
) -> str | None:
    """Why a frame's input is not stored (None: it may be, or it repeats the stored one)."""
    if participant is None:
        return "not_in_round"
    if participant.masked_input and hmac.compare_digest(participant.masked_sha256, digest):
        return None  # sent again (asked again after a reconnection): stored already
    try:
        _check_may_upload(training_round, participant)
    except DomainError as refused:
        return refused.code
    if not participant.pod.is_active or participant.user_id not in consenting:
        return "consent_withdrawn"
    if len(frame.body) != expected:
        return "wrong_length"
    if not hmac.compare_digest(digest, frame.sha256.lower()):
        return "checksum_mismatch"
    return None
