"""Taking part in a round: consent check, local training, and the SecAgg+ client stages.

The service sends ``round.stage`` messages over the control channel; the pod answers each stage
with a ``round.reply`` (keys, encrypted shares, unmasking shares), uploads its masked input over
HTTP (or, where the service offers it, as one binary frame on the channel), or declines with
``round.decline`` and a reason code. What leaves the pod is never a record
and never an unmasked update: the update is clipped, weighted and (under DP) noised, then masked.

First stage (``advertise_keys``): the pod downloads the round's global weights (checking their
SHA-256 against the task), takes its owner's signed consent receipt from the message (a pod new
to the request finds it there) or else fetches it (once per request; again when a task fails
the check against the receipt held), verifies it with the service key pinned at pairing,
checks the task against it (:mod:`pods.agent.consent`), reads the consented fields from the
local store and trains (:mod:`pods.agent.prepare`). Only then does it advertise keys, so a pod
that declines never enters the round's graph. At ``share_keys`` it checks every neighbour's
identity key against the key log (:mod:`pods.agent.neighbours`) before sending any share.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from training.secagg.client import ClientRound
from training.secagg.errors import FloorError, SecAggError

from .consent import check_task, first_fitting, verify_receipt
from .controls import ControlVariates
from .data import DataSource
from .keylog import KeyLogError, KeyLogVerifier
from .neighbours import verify_share_keys_adverts
from .plan import PlanPrivacy, PrivacyLedger
from .prepare import Declined, Parts, prepare_round
from .protocol import MASKED_FRAME, MessageType, masked_frame
from .retry import TransportFailed, with_retries

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Reply = dict[str, Any]
Event = dict[str, Any]


class Transport(Protocol):
    """The HTTP calls a round needs (:class:`pods.agent.service.PodService` provides them)."""

    def receipt(self, request_id: str) -> dict[str, Any]: ...

    def download(self, path: str) -> bytes: ...

    def upload(self, path: str, body: bytes) -> None: ...


@dataclass
class _Round:
    task: Mapping[str, Any]
    plan: PlanPrivacy
    client: ClientRound
    parts: Parts = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    bytes_sent: int = 0
    # What the pod answered at each stage (None: the masked input went over HTTP; bytes: as a
    # frame). A stage asked again (the service re-sends it after a reconnection) gets the same
    # answer, never a new one.
    answered: dict[str, Reply | bytes | None] = field(default_factory=dict)


class RoundWorker:
    """One pod's side of every round it is asked to join. Synchronous: call it from a thread.

    ``handle`` takes a message from the service and returns the message to send back on the
    control channel (or ``None``). ``on_event`` gets progress events without any secret.
    """

    def __init__(
        self,
        *,
        identity: Ed25519PrivateKey,
        transport: Transport,
        data: DataSource,
        pinned_keys: Mapping[str, Any],
        on_event: Callable[[Event], object] = lambda event: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        vanish: Callable[[str], bool] | None = None,
        ledger: PrivacyLedger | None = None,
        key_log: KeyLogVerifier | None = None,
        speed: float = 1.0,
        controls: ControlVariates | None = None,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self.data = data
        self.pinned_keys = pinned_keys
        self.on_event = on_event
        self.now = now
        self.vanish = vanish  # demos and tests: whether to drop off the network at a stage
        self.ledger = ledger or PrivacyLedger()
        # Neighbours' identity keys are accepted only with the key log's proofs (None: the
        # caller checks nothing, as in-process tests of other concerns do).
        self.key_log = key_log
        # The share of the plan's local work this device manages per round (a slow phone:
        # < 1). It trains fewer steps and says so in the masked sum (FedNova), never dropped.
        self.speed = speed
        # SCAFFOLD: the pod's own control variate c_i per request (pods.agent.controls).
        self.controls = controls or ControlVariates()
        self.rounds: dict[int, _Round] = {}
        self.bytes_sent: dict[int, int] = {}
        self.sleep: Callable[[float], None] = time.sleep  # tests replace it
        self.rng = random.Random()  # jitter, not a secret
        # The deadline of the stage being handled: retries of its HTTP calls stop before it.
        self.deadline: datetime | None = None
        # Verified receipts by request: fetched for a request's first task, and again only
        # when a later task fails the check against the one held (consent renewed, expired).
        self.receipts: dict[str, Any] = {}
        # Masked inputs up to this many bytes go as a binary frame on the control channel
        # (what the service offered on the current connection); larger ones, or with no offer,
        # over HTTP.
        self.frame_limit = 0

    def use_channel(self, welcome: Mapping[str, Any]) -> None:
        """A connection's ``welcome``: whether its service takes masked inputs as frames."""
        offered = welcome.get("masked_frames", 0)
        self.frame_limit = offered if isinstance(offered, int) and offered > 0 else 0

    def handle(self, message: Message) -> Reply | bytes | None:
        kind = message.get("type")
        round_id = message.get("round")
        if not isinstance(round_id, int):
            return None
        if kind == MessageType.ROUND_STORED:
            self.on_event({"event": "stored", "round": round_id})
            return None
        if kind == MessageType.ERROR:
            # The service refused an answer (a masked-input frame: the code an HTTP upload
            # would get). The round goes on without it; its end comes as round.end.
            self.on_event({"event": "refused", "round": round_id, "code": message.get("code")})
            return None
        if kind == MessageType.ROUND_END:
            state = self.rounds.pop(round_id, None)
            self.controls.round_over(round_id, message.get("status") == "completed")
            self.on_event(
                {
                    "event": "round_end",
                    "round": round_id,
                    "status": message.get("status"),
                    "bytes_sent": state.bytes_sent if state else 0,
                }
            )
            return None
        if kind != MessageType.ROUND_STAGE:
            return None
        stage = str(message.get("stage"))
        if self.vanish is not None and self.vanish(stage):
            raise Vanish(stage)
        self.deadline = _deadline_of(message)
        try:
            reply = self._stage(round_id, stage, message)
        except Declined as declined:
            self.rounds.pop(round_id, None)
            self.on_event({"event": "declined", "round": round_id, "code": declined.code})
            return self._sent(
                round_id,
                {"type": MessageType.ROUND_DECLINE, "round": round_id, "code": declined.code},
            )
        except FloorError as floor:
            # Less protection than the owner agreed to: say no, and reveal nothing more.
            self.rounds.pop(round_id, None)
            self.on_event({"event": "declined", "round": round_id, "code": floor.code})
            return self._sent(
                round_id, {"type": MessageType.ROUND_DECLINE, "round": round_id, "code": floor.code}
            )
        except SecAggError as exc:
            # The service sent something inconsistent: stop this round, reveal nothing more.
            self.rounds.pop(round_id, None)
            self.on_event({"event": "aborted", "round": round_id, "code": exc.code})
            return None
        except TransportFailed as failed:
            # The service refused or could not be reached: this round goes on without us.
            self.rounds.pop(round_id, None)
            self.on_event(
                {"event": "failed", "round": round_id, "stage": stage, "code": str(failed)}
            )
            return None
        except Exception as exc:
            # Anything else a task can provoke (a malformed payload, data the plan cannot take):
            # the pod declines this round and keeps running. Only the error's kind is logged:
            # its text may quote a record or a key.
            logger.warning("round %s: stage %s failed (%s)", round_id, stage, type(exc).__name__)
            self.rounds.pop(round_id, None)
            self.on_event({"event": "declined", "round": round_id, "code": "task_failed"})
            return self._sent(
                round_id,
                {"type": MessageType.ROUND_DECLINE, "round": round_id, "code": "task_failed"},
            )
        self.on_event({"event": "stage", "round": round_id, "stage": stage})
        return self._sent(round_id, reply) if reply is not None else None

    def _sent(self, round_id: int, reply: Reply | bytes) -> Reply | bytes:
        size = len(reply) if isinstance(reply, bytes) else len(json.dumps(reply))
        state = self.rounds.get(round_id)
        if state is not None:
            state.bytes_sent += size
        return reply

    def _stage(self, round_id: int, stage: str, message: Message) -> Reply | bytes | None:
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise Declined("malformed_stage")
        state = self.rounds.get(round_id)
        if state is not None and stage in state.answered:
            return state.answered[stage]
        if stage == "advertise_keys":
            task = message.get("task")
            if not isinstance(task, dict):
                raise Declined("malformed_task")
            plan, parts = self._prepare(task, payload, message.get("receipt"))
            client = ClientRound(self.identity, floors=plan.floors())
            state = _Round(task=task, plan=plan, client=client, parts=parts)
            self.rounds[round_id] = state
            advert = state.client.advertise_keys(payload)
            head = self.key_log.head if self.key_log is not None else None
            advert["key_log_size"] = head.tree_size if head is not None else 0
            reply: Reply | bytes | None = self._reply(round_id, stage, advert)
        elif state is None:
            # A later stage of a round this pod holds nothing of: it restarted (its round keys
            # died with the process) or it left the round. Saying so at once lets the stage
            # close without waiting out its deadline for an answer that cannot come.
            raise Declined("round_state_lost")
        elif stage == "share_keys":
            self._check_neighbour_keys(state, payload)
            reply = self._reply(round_id, stage, state.client.share_keys(payload))
        elif stage == "masked_input":
            vector = state.client.masked_input(payload, state.parts)
            body = vector.astype("<u4").tobytes()
            if 0 < MASKED_FRAME.size + len(body) <= self.frame_limit:
                # Sent on the channel by the caller; asked again (after a reconnection), the
                # same frame goes again and the service takes it as the one it holds.
                reply = masked_frame(round_id, body)
            else:
                self._upload(str(state.task["masked_input_url"]), body)
                reply = None
                state.bytes_sent += len(body)
            # From here the service holds (or may hold) an input made from the owner's data: it
            # counts.
            self.ledger.record(str(state.task["request"]), round_id)
            self.controls.sent(str(state.task["request"]), round_id)
            state.parts = {}  # the plain contribution is not kept past masking
        elif stage == "consistency_check":
            reply = self._reply(round_id, stage, state.client.consistency_check(payload))
        elif stage == "unmask":
            reply = self._reply(round_id, stage, state.client.unmask(payload))
        else:
            raise Declined("unknown_stage")
        state.answered[stage] = reply
        return reply

    def _check_neighbour_keys(self, state: _Round, payload: Mapping[str, Any]) -> None:
        """Every neighbour's identity key must be in the append-only key log, under a head
        consistent with every head this pod saw, and not another pod of its own person."""
        if self.key_log is None:
            return
        receipt = self.receipts.get(str(state.task["request"])) or {}
        subject = receipt.get("subject") if isinstance(receipt, Mapping) else None
        pseudonym = subject.get("pseudonym") if isinstance(subject, Mapping) else None
        try:
            verify_share_keys_adverts(
                self.key_log, payload, owner_pseudonym=str(pseudonym) if pseudonym else None
            )
        except KeyLogError as refused:
            raise Declined(refused.code) from None

    def _call(self, call: Callable[..., Any], *arguments: Any) -> Any:
        """An HTTP call of the transport, retried (:func:`pods.agent.retry.with_retries`) up
        to the stage's deadline."""
        return with_retries(
            call,
            *arguments,
            rng=self.rng,
            now=self.now,
            deadline=self.deadline,
            sleep=self.sleep,
            on_event=self.on_event,
        )

    def _download(self, path: str) -> bytes:
        return bytes(self._call(self.transport.download, path))

    def _upload(self, path: str, body: bytes) -> None:
        """The masked input, retried as :meth:`_call` does (the same bytes each time). A retry
        answered ``already_uploaded`` means an earlier attempt did store it (only its answer was
        lost): the service keeps the first input of a pod and refuses any other."""
        attempts = 0

        def once() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self.transport.upload(path, body)
            except Exception as exc:
                if attempts > 1 and getattr(exc, "code", None) == "already_uploaded":
                    return
                raise

        self._call(once)

    @staticmethod
    def _reply(round_id: int, stage: str, payload: dict[str, Any]) -> Reply:
        return {
            "type": MessageType.ROUND_REPLY,
            "round": round_id,
            "stage": stage,
            "payload": payload,
        }

    def _receipt(self, task: Mapping[str, Any], offered: Any) -> dict[str, Any]:
        """The receipt a task runs under: the one held for its request, else the one that came
        with the task, else one fetched now — the first that verifies with a pinned key and
        covers exactly this task (one fetched that does not refuses the task). The one held
        may no longer fit: consent renewed or expired since."""
        request_id = str(task["request"])
        held = self.receipts.pop(request_id, None)
        sources: list[Callable[[], dict[str, Any]]] = []
        if held is not None:
            sources.append(lambda: held)
        if offered is not None:
            sources.append(lambda: verify_receipt(offered, self.pinned_keys))
        sources.append(
            lambda: verify_receipt(self._call(self.transport.receipt, request_id), self.pinned_keys)
        )

        def fits(receipt: dict[str, Any]) -> None:
            check_task(
                receipt=receipt,
                request_id=request_id,
                spec=task["spec"],
                weights_sha256=str(task["initial_weights_sha256"]),
                now=self.now(),
            )

        receipt = self.receipts[request_id] = first_fitting(sources, fits)
        return receipt

    def _prepare(
        self, task: Mapping[str, Any], payload: Mapping[str, Any], offered: Any = None
    ) -> tuple[PlanPrivacy, Parts]:
        """The task's checks, then training (:func:`pods.agent.prepare.prepare_round`): the
        plan's privacy parameters and the pod's contribution, before any key is advertised."""
        return prepare_round(
            task,
            payload,
            download=self._download,
            check_receipt=lambda: self._receipt(task, offered),
            data=self.data,
            ledger=self.ledger,
            controls=self.controls,
            speed=self.speed,
            on_event=self.on_event,
        )


def channel_handler(
    worker: RoundWorker, on_vanish: Callable[[Vanish], None] | None = None
) -> Callable[[Message, Any], Awaitable[None]]:
    """A :class:`pods.agent.channel.PodChannel` handler: the worker runs in a thread (training
    must not stall heartbeats); its reply goes back on the socket. ``on_vanish`` sees a pod told
    to vanish before the :class:`Vanish` ends the channel (``run --crash-at`` exits there)."""

    async def handle(message: Message, ws: Any) -> None:
        try:
            reply = await asyncio.to_thread(worker.handle, message)
        except Vanish as gone:
            if on_vanish is not None:
                on_vanish(gone)
            raise
        if isinstance(reply, bytes):
            await ws.send(reply)  # a masked input as one binary frame
        elif reply is not None:
            await ws.send(json.dumps(reply))

    return handle


def _deadline_of(message: Message) -> datetime | None:
    value = message.get("deadline")
    if not isinstance(value, str):
        return None
    try:
        deadline = datetime.fromisoformat(value)
    except ValueError:
        return None
    return deadline if deadline.tzinfo is not None else deadline.replace(tzinfo=UTC)


class Vanish(Exception):
    """Raised by a worker told to fail at a stage: the pod drops off the network there."""
