"""The model update of a completed round: decode the sum, step the server optimizer, account
privacy, store the new model version, and open the next round or complete the request."""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np
import numpy.typing as npt
from django.core.files.base import ContentFile
from django.db import transaction
from safetensors.numpy import load as load_vectors
from safetensors.numpy import save as save_vectors

from pods.agent.protocol import RoundEnd
from training.models import ModelRequest, ModelVersion, RoundParticipant, RoundStatus, TrainingRound
from training.modelspec import validate_spec
from training.modelspec.explain import read_explanation
from training.modelspec.server_optim import server_step
from training.secagg.aggregate import UnmaskPlan
from training.secagg.encoding import Layout, decode

from . import opening, scaffold, valuation
from .ending import end_round
from .locking import lock_request
from .progress import round_changed

Vector = npt.NDArray[np.float32]

# Published counts are rounded to this many records, so that comparing two rounds whose cohorts
# differ by one pod does not give that pod's record count (the privacy notice says so).
COUNT_GRANULARITY = 10


def coarse_count(count: float) -> int:
    return int(COUNT_GRANULARITY * round(count / COUNT_GRANULARITY))


def _privacy(model_request: ModelRequest) -> tuple[float | None, bool]:
    """ε after this round (RDP over every completed round), and whether one more round like
    it would exceed the budget (training stops before it is exceeded, DESIGN.md section 6).

    Accounted against the service, which knows who was drawn: no amplification by subsampling
    (q = 1), the same figure each pod's own ledger computes (``pods.agent.plan``)."""
    dp = model_request.dp
    if not dp:
        return None, False
    from training.secagg.dp import epsilon_of  # opacus imports torch: only where DP is on

    sigma, delta = float(dp["noise_multiplier"]), float(dp["delta"])
    completed = model_request.rounds_run.filter(status=RoundStatus.COMPLETED).count()
    history = [(sigma, 1.0, completed + 1)]
    epsilon = epsilon_of(history, delta)
    over_budget = epsilon_of([(sigma, 1.0, completed + 2)], delta) > float(dp["target_epsilon"])
    return epsilon, over_budget


def _explanation(
    model_request: ModelRequest, totals: dict[str, npt.NDArray[np.float64]]
) -> dict[str, object]:
    """The cohort's per-class evaluation and feature importance (from the sums alone)."""
    explanation = read_explanation(validate_spec(model_request.spec), totals, coarse_count)
    return {"explanation": explanation} if explanation else {}


def _new_weights(
    model_request: ModelRequest,
    training_round: TrainingRound,
    base: ModelVersion,
    totals: dict[str, npt.NDArray[np.float64]],
    group_totals: list[tuple[str, int, dict[str, npt.NDArray[np.float64]]]],
    start_blob: bytes | None,
) -> tuple[bytes, dict[str, Vector] | None, dict[str, object]]:
    """The server step from the base model — or, when robust valuation left a group out, from
    the candidate without it — and the candidates of this round's groups."""
    import torch  # the model's tensors: torch only where a model is rebuilt

    from training.modelspec import dump_weights, load_weights, unflatten_state
    from training.modelspec.federated import average_update
    from training.modelspec.vectors import flatten_state

    spec = validate_spec(model_request.spec)
    if start_blob is None:
        with base.weights.open("rb") as handle:
            start_blob = handle.read()
    state = load_weights(start_blob, spec)
    start = flatten_state(state, spec)
    before = _optimizer_state(base)
    vector, optimizer_state = server_step(
        spec.training.server_optimizer,
        start.copy(),
        average_update(spec, totals),
        None if before is None else {k: v.copy() for k, v in before.items()},
    )
    new_state = unflatten_state(vector, spec, like=state)
    blob = dump_weights(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in new_state.items()}
    )
    stored = valuation.store_candidates(
        model_request, training_round, spec, start, before, totals, group_totals, state
    )
    return blob, optimizer_state, stored


def _optimizer_state(version: ModelVersion) -> dict[str, Vector] | None:
    if not version.optimizer_state:
        return None
    with version.optimizer_state.open("rb") as handle:
        return dict(load_vectors(handle.read()))


def finish(
    training_round: TrainingRound,
    layout: Layout,
    total: npt.NDArray[np.uint32],
    participants: list[RoundParticipant],
    plan: UnmaskPlan,
    now: datetime,
    group_totals: list[tuple[int, npt.NDArray[np.uint32]]] | None = None,
) -> None:
    """Apply the unmasked sum ``total`` and record the round (inside the finalizing
    transaction, the round and its participants locked). ``group_totals``: each valued
    group's position and unmasked sum, when the round was split (issue 16)."""
    model_request = lock_request(training_round.model_request_id)
    survivors = [p for p in participants if p.index in set(plan.survivors)]
    totals = decode(total, layout)
    base = training_round.base_version
    assert base is not None, "a round always starts from a model version"
    # FedAvg's weighted mean, or FedNova's step-normalised one (from the masked totals alone),
    # from the base model or — robust group value — the candidate without a harmful group.
    spec = validate_spec(model_request.spec)
    start_blob, valued = valuation.start_point(spec, training_round, totals)
    transaction.on_commit(lambda: valuation.delete_candidates(base))
    labels = training_round.metrics.get("group_labels", [])
    by_group = [
        (str(labels[position]), len(plan.groups[i]), decode(part, layout))
        for i, (position, part) in enumerate(group_totals or [])
        if position < len(labels)
    ]
    blob, optimizer_state, stored = _new_weights(
        model_request, training_round, base, totals, by_group, start_blob
    )
    examples = float(totals["eval_examples"][0])
    metrics = {
        **{k: v for k, v in training_round.metrics.items() if k != "shards_done"},
        "participants": len(survivors),
        "eval_examples": coarse_count(examples),
        "eval_loss": float(totals["eval_loss"][0]) / examples if examples else None,
        "eval_accuracy": float(totals["eval_correct"][0]) / examples if examples else None,
        **_explanation(model_request, totals),
        **valued,
        **stored,
    }
    epsilon, over_budget = _privacy(model_request)
    if epsilon is not None:
        model_request.epsilon_spent = epsilon
    version = ModelVersion(
        model_request=model_request,
        round_number=training_round.number,
        sha256=hashlib.sha256(blob).hexdigest(),
        metrics=metrics,
        participants=len(survivors),
        epsilon=epsilon,
    )
    number = training_round.number
    version.weights.save(f"round-{number}.safetensors", ContentFile(blob), save=False)
    if optimizer_state is not None:
        contiguous = {k: np.ascontiguousarray(v) for k, v in optimizer_state.items()}
        version.optimizer_state.save(
            f"round-{number}-server.safetensors",
            ContentFile(bytes(save_vectors(contiguous))),
            save=False,
        )
    scaffold.attach_control(version, training_round, spec, totals)  # c from Σ Δc_i
    version.save()
    training_round.survivors = len(survivors)
    training_round.metrics = metrics
    training_round.epsilon = epsilon
    end_round(training_round, participants, RoundEnd.COMPLETED, now)
    model_request.current_round = number
    if number >= model_request.rounds:
        model_request.move_to(ModelRequest.Status.COMPLETED, now=now)
    elif over_budget and model_request.dp:
        model_request.move_to(
            ModelRequest.Status.COMPLETED,
            now=now,
            reason=(
                f"Stopped after round {number}: another round would exceed the privacy budget "
                f"(ε ≤ {model_request.dp['target_epsilon']})."
            ),
        )
        transaction.on_commit(lambda: valuation.delete_candidates(version))  # none will value them
    else:
        request_id = model_request.pk
        transaction.on_commit(lambda: opening.reopen(request_id, number + 1, 1))
    model_request.save()
    round_changed(training_round, model_request.status)
