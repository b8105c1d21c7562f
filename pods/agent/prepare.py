"""Before a pod joins a round: every check of the task, then local training.

On a round's first stage (``advertise_keys``) :class:`pods.agent.rounds.RoundWorker` hands the
task here, and the checks run in this order: the task's URLs are on the pinned origin; the global
weights match their SHA-256 (and, in a request's first round, the plan's); the owner's consent
receipt covers the task; the request's privacy budget has room for one more round; the plan
names a label and the local store holds records its fields can take; and the round's shape — the
group-value candidates, SCAFFOLD's control variates, the layout of the masked vector, the
neighbourhood the plan promises, the binding of the model to the round — is the plan's. Only then
does the pod train, returning the plan's privacy parameters and its contribution.

Every refusal is a :class:`Declined` with a stable reason code, raised before any key is
advertised: a round the pod declines costs it no training (nor, under load, the stage's deadline:
the service learns why, not only that the pod was silent).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from training.modelspec import load_weights, validate_spec
from training.modelspec.errors import SpecError
from training.modelspec.trainer import train_local
from training.secagg.client import check_advertise

from .candidates import CandidateError, load_candidates
from .consent import ConsentRefused
from .controls import ControlError, ControlVariates, scaffold_inputs
from .data import DataSource, encode_for
from .layout import LayoutRefused, check_layout
from .plan import PlanPrivacy, PrivacyLedger, contribution
from .protocol import on_pinned_origin, task_bound

logger = logging.getLogger(__name__)

Parts = dict[str, npt.NDArray[np.floating[Any]]]


class Declined(Exception):
    """The pod declines the round; ``code`` says why (``round.decline``)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def prepare_round(
    task: Mapping[str, Any],
    payload: Mapping[str, Any],
    *,
    download: Callable[[str], bytes],
    check_receipt: Callable[[], object],
    data: DataSource,
    ledger: PrivacyLedger,
    controls: ControlVariates,
    speed: float,
    on_event: Callable[[dict[str, Any]], object],
) -> tuple[PlanPrivacy, Parts]:
    """Check consent, the privacy budget, the data and the round's shape against the plan,
    then train: the plan's privacy parameters and the pod's contribution.

    ``download`` fetches a path of the service (retried up to the stage's deadline);
    ``check_receipt`` finds the consent receipt that covers the task (raising
    :class:`pods.agent.consent.ConsentRefused` when none does); ``speed`` is the share of the
    plan's local work this device manages. Raises :class:`Declined`, or
    :class:`training.secagg.errors.FloorError` for a neighbourhood below the plan's floors.
    """
    try:
        spec = validate_spec(task["spec"])
        request_id = str(task["request"])
        for url in (task["weights_url"], task["masked_input_url"]):
            if not isinstance(url, str) or not on_pinned_origin(url):
                raise Declined("origin_not_pinned")  # the token goes to no other host
        weights = download(str(task["weights_url"]))
        if hashlib.sha256(weights).hexdigest() != task["weights_sha256"]:
            raise Declined("weights_mismatch")
        initial = str(task["initial_weights_sha256"])
        if int(task.get("base_round", 0)) == 0 and task["weights_sha256"] != initial:
            raise Declined("plan_mismatch")
        check_receipt()
        state = load_weights(weights, spec)
    except ConsentRefused as refused:
        raise Declined(refused.code) from None
    except SpecError:
        raise Declined("bad_spec") from None
    except (KeyError, TypeError, ValueError):
        raise Declined("malformed_task") from None
    plan = PlanPrivacy.of(spec)
    if not plan.next_round_fits(ledger.rounds(request_id)):
        raise Declined("privacy_budget_exhausted")
    if not spec.data.label:
        raise Declined("no_label")
    try:
        category = spec.data.category
        encoded = encode_for(spec, data.records(category), data.fields(category))
    except (KeyError, ValueError):
        raise Declined("no_data") from None
    # Records the plan's fields cannot take were set aside (or filled, as the plan says):
    # counted here, on the device; never used, never sent.
    on_event(
        {
            "event": "data",
            "request": request_id,
            "used": encoded.used,
            "set_aside": dict(encoded.dropped),
            "filled": dict(encoded.filled),
        }
    )
    if any(reason.startswith("label_outside_model") for reason in encoded.dropped):
        raise Declined("training_failed")  # the plan does not fit this pod's labels
    if encoded.used == 0:
        raise Declined("no_data")
    x, y = encoded.x, encoded.y
    try:  # group value: the last round's models without one group each
        candidates = load_candidates(task, spec, plan, download)
    except CandidateError as refused:
        raise Declined(refused.code) from None
    try:  # SCAFFOLD's c and c_i, when the verified spec asks for it
        c, c_i = scaffold_inputs(spec, task, controls, download)
    except ControlError as refused:
        raise Declined(refused.code) from None
    try:  # the plan's layout only: no other can single a pod out inside a sum
        check_layout(payload.get("layout"), spec, candidates=len(task.get("candidates") or []))
    except LayoutRefused as refused:
        raise Declined(refused.code) from None
    check_advertise(plan.floors(), payload)  # the neighbourhood the plan promises (FloorError)
    if not task_bound(payload.get("round_id"), task):
        # Its signatures and masks would not bind the model it trains on: the service could
        # give other pods another one unseen (the model-inconsistency attack).
        raise Declined("model_not_bound")
    max_steps = None
    if speed < 1.0:
        batches = -(-max(1, round(len(x) * 0.8)) // spec.training.batch_size)
        planned = spec.training.local_epochs * batches
        if spec.training.local_steps is not None:
            planned = min(planned, spec.training.local_steps)
        max_steps = max(1, int(planned * speed))
    try:
        result = train_local(
            spec,
            state,
            x,
            y,
            seed=int(task.get("seed", 0)),
            max_steps=max_steps,
            server_control=c,
            client_control=c_i,
            candidates=candidates,
        )
        if result.control is not None:
            controls.stage(request_id, result.control)
        on_event({"event": "trained", "steps": result.steps, "speed": speed})
        return plan, contribution(result, plan, spec)
    except Exception as exc:  # e.g. a label outside the model's outputs: decline, go on
        # Only the error's kind: its text may quote a record's value.
        logger.warning("local training failed (%s)", exc.__class__.__name__)
        raise Declined("training_failed") from None
