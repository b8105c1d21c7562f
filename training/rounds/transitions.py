"""The round's state machine: which stage follows which, and what a participant must have reached.

One table (docs/architecture.md, "Round state machine") replaces the parallel maps the engine
used to keep. A round's status while a stage is open equals the stage's name; the stage's
protocol calls (what a pod is asked, how its answer is taken in, how the stage closes) are
looked up here, never dispatched with if/elif.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from training.models import ParticipantStage, RoundStatus
from training.secagg.server import ServerRound
from training.secagg.wire import Stage

Payload = dict[str, Any]


@dataclass(frozen=True)
class StageStep:
    """One open stage of a round."""

    status: RoundStatus  # the round's status while the stage is open
    stage: Stage  # what pods are asked
    waiting: ParticipantStage  # a live participant that has not answered yet
    answered: ParticipantStage  # a live participant once it has answered
    following: RoundStatus  # the round's status once the stage closes
    request: Callable[[ServerRound, int], Payload]  # what pod ``index`` is asked
    receive: Callable[[ServerRound, int, Mapping[str, Any]], None]  # take one answer in
    close: Callable[[ServerRound], list[int]]  # close the stage: who goes on
    answered_over_channel: bool = True  # False: the answer is an HTTP upload


def _close_collection(server: ServerRound) -> list[int]:
    server.forget_routed()  # the relayed envelopes were kept for pods asking again until now
    return server.close_masked()


STEPS: dict[RoundStatus, StageStep] = {
    step.status: step
    for step in (
        StageStep(
            RoundStatus.ADVERTISING,
            Stage.ADVERTISE_KEYS,
            ParticipantStage.SELECTED,
            ParticipantStage.ADVERTISED,
            RoundStatus.SHARING,
            request=ServerRound.advertise_request,
            receive=ServerRound.receive_advert,
            close=ServerRound.close_advertise,
        ),
        StageStep(
            RoundStatus.SHARING,
            Stage.SHARE_KEYS,
            ParticipantStage.ADVERTISED,
            ParticipantStage.SHARED,
            RoundStatus.COLLECTING,
            request=ServerRound.share_request,
            receive=ServerRound.receive_shares,
            close=ServerRound.close_share,
        ),
        StageStep(
            RoundStatus.COLLECTING,
            Stage.MASKED_INPUT,
            ParticipantStage.SHARED,
            ParticipantStage.MASKED,
            RoundStatus.CHECKING,
            request=ServerRound.masked_request,
            receive=lambda server, index, _payload: server.receive_masked(index),
            close=_close_collection,
            answered_over_channel=False,
        ),
        StageStep(
            RoundStatus.CHECKING,
            Stage.CONSISTENCY_CHECK,
            ParticipantStage.MASKED,
            ParticipantStage.CHECKED,
            RoundStatus.UNMASKING,
            request=ServerRound.consistency_request,
            receive=ServerRound.receive_consistency,
            close=ServerRound.close_consistency,
        ),
        StageStep(
            RoundStatus.UNMASKING,
            Stage.UNMASK,
            ParticipantStage.CHECKED,
            ParticipantStage.UNMASKED,
            RoundStatus.AGGREGATING,
            request=ServerRound.unmask_request,
            receive=ServerRound.receive_unmask,
            close=lambda server: list(server.close_unmask().survivors),
        ),
    )
}
OPEN_STATUSES: tuple[RoundStatus, ...] = tuple(STEPS)
# From the close of collection the inputs in the sum are fixed: consent re-checks and people
# leaving affect later rounds, and a pod lost from here on is still in this round's sum.
SUM_FIXED: tuple[RoundStatus, ...] = (RoundStatus.CHECKING, RoundStatus.UNMASKING)
FINISHED_STATUSES: tuple[RoundStatus, ...] = (RoundStatus.COMPLETED, RoundStatus.ABORTED)
# A pod's own stage order (selected, advertise_keys, ..., unmask): a repeat is judged on it.
PARTICIPANT_ORDER: list[str] = list(ParticipantStage.values)


def step_of(status: str) -> StageStep | None:
    """The open stage of a round in ``status``, or None (aggregating, finished)."""
    try:
        return STEPS.get(RoundStatus(status))
    except ValueError:
        return None
