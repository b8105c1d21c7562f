"""Round progress for watchers (the request page, the provider's ``watch``), after commit."""

from __future__ import annotations

from training import progress
from training.models import TrainingRound


def round_changed(training_round: TrainingRound, request_status: str) -> None:
    progress.publish(
        training_round.model_request_id, progress.round_event(training_round, request_status)
    )
