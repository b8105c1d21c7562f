"""Masked-input uploads: exact length, SHA-256 checked, streamed to storage, once per pod.

The service stores the masked vector as it arrived (uint32, little-endian) and never decodes
it alone: only shard sums over many pods are ever combined (DESIGN.md section 5).
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from typing import BinaryIO

from django.core.files import File
from django.db import transaction
from django.utils import timezone

from dataspace.errors import Conflict, DomainError, NotFound
from pods.models import Pod

from .models import RoundParticipant, TrainingRound

CHUNK = 1 << 20


def _participant(pod: Pod, round_id: int) -> RoundParticipant:
    participant = (
        RoundParticipant.objects.select_related("round__model_request", "pod")
        .filter(round_id=round_id, pod=pod)
        .first()
    )
    if participant is None:
        raise NotFound("This pod is not in that round.", code="not_in_round")
    return participant


def masked_input_store(
    *, pod: Pod, round_id: int, stream: BinaryIO, length: int | None, sha256: str
) -> RoundParticipant:
    """Store one pod's masked vector for a round. Refuses anything off-protocol, keeps nothing."""
    participant = _participant(pod, round_id)
    training_round = participant.round
    if training_round.status != TrainingRound.Status.COLLECTING:
        raise Conflict("The round is not collecting masked inputs.", code="wrong_stage")
    if participant.masked_input:
        raise Conflict("This pod already sent its masked input.", code="already_uploaded")
    if participant.dropped or participant.stage_reached != RoundParticipant.Stage.SHARED:
        raise Conflict("This pod cannot send a masked input now.", code="wrong_stage")
    from .orchestrator import usable

    if not usable(training_round.model_request, participant, timezone.now()):
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
        from .orchestrator import round_advance, stage_answered

        # One transaction, locks in the orchestrator's order (the round, then the participant):
        # a stage cannot close between storing the input and recording it.
        with transaction.atomic():
            locked_round = TrainingRound.objects.select_for_update().get(pk=training_round.pk)
            if locked_round.status != TrainingRound.Status.COLLECTING:
                raise Conflict("The round is not collecting masked inputs.", code="wrong_stage")
            locked = RoundParticipant.objects.select_for_update().get(pk=participant.pk)
            if locked.masked_input:
                raise Conflict("This pod already sent its masked input.", code="already_uploaded")
            if locked.dropped:
                raise Conflict("This pod cannot send a masked input now.", code="wrong_stage")
            name = f"round-{training_round.pk}-pod-{locked.index}.u32"
            locked.masked_input.save(name, File(spool), save=False)
            locked.masked_sha256 = digest.hexdigest()
            locked.stage_reached = RoundParticipant.Stage.MASKED
            locked.save(update_fields=["masked_input", "masked_sha256", "stage_reached"])
            complete = stage_answered(locked_round.pk, locked_round.status)
        if complete:
            round_advance(training_round.pk, TrainingRound.Status.COLLECTING)
    return locked
