"""What the plan a person consented to implies for every round: the pod's own privacy floors.

The pod takes every privacy parameter — cohort minimum, SecAgg threshold fraction, DP noise,
clip, δ and ε budget, weighting, rounds — from the spec it verified against its owner's signed
receipt (the plan hash covers the spec), never from the task a round's message carries. From
them it derives the smallest neighbourhood and threshold it accepts (DESIGN.md section 10) and
keeps its own ledger of the rounds its data fed, so that a dishonest service can neither strip
the noise, shrink a neighbourhood, nor run more rounds than the budget the owner agreed to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.modelspec.federated import federated_parts
from training.modelspec.spec import DPSpec, ModelSpec
from training.modelspec.trainer import LocalResult
from training.modelspec.valuation import value_parts
from training.secagg.client import Floors
from training.secagg.dp import epsilon, privatize
from training.secagg.encoding import clip_l2
from training.secagg.graph import choose_k

from .home import write_private

LEDGER_FILE = "privacy-ledger.json"  # in the pod's home, 0600

# Below two, a single neighbour (possibly one the service made) could rebuild a pod's secrets.
MIN_THRESHOLD = 2


@dataclass(frozen=True)
class PlanPrivacy:
    """The privacy parameters of a verified plan."""

    min_participants: int
    cohort_size: int
    threshold_fraction: float
    rounds: int
    dp: DPSpec | None
    update_clip: float
    max_examples: int
    # Valued groups the plan states (0: none): only then may a round split its cohort.
    groups: int = 0

    @classmethod
    def of(cls, spec: ModelSpec) -> PlanPrivacy:
        return cls(
            groups=spec.valuation.groups if spec.valuation else 0,
            min_participants=spec.training.min_participants,
            cohort_size=spec.training.cohort_size,
            threshold_fraction=spec.privacy.secagg_threshold,
            rounds=spec.training.rounds,
            dp=spec.privacy.dp,
            update_clip=spec.privacy.update_clip,
            max_examples=spec.privacy.max_examples,
        )

    @property
    def weighting(self) -> str:
        """DP requests weight every pod alike (DESIGN.md section 6); others by example count."""
        return "uniform" if self.dp else "examples"

    @property
    def clip_norm(self) -> float:
        return self.dp.clip_norm if self.dp else self.update_clip

    def floors(self) -> Floors:
        """The smallest neighbourhood a round of this plan can give a pod (a cohort of the
        plan's minimum size) and the threshold fraction the owner agreed to."""
        smallest = max(MIN_THRESHOLD + 1, self.min_participants)
        return Floors(
            min_neighbours=max(MIN_THRESHOLD, choose_k(smallest)),
            threshold_fraction=self.threshold_fraction,
            min_threshold=MIN_THRESHOLD,
            # No sum this pod's input is in (a group's, or the cohort's) may cover fewer.
            min_survivors=max(2, self.min_participants),
            grouped=self.groups > 0,
        )

    def epsilon_after(self, rounds: int) -> float:
        """ε against the service after ``rounds`` rounds of this pod's data: the service knows
        who was drawn, so no amplification by subsampling is claimed (q = 1)."""
        if self.dp is None:
            return float("inf") if rounds else 0.0
        return epsilon(self.dp.noise_multiplier, 1.0, rounds, self.dp.delta)

    def next_round_fits(self, rounds_done: int) -> bool:
        """Whether one more round keeps within the ε the owner agreed to (and the plan's
        number of rounds)."""
        if rounds_done >= self.rounds:
            return False
        if self.dp is None:
            return True
        return self.epsilon_after(rounds_done + 1) <= self.dp.target_epsilon


class PrivacyLedger:
    """The rounds each request used this pod's data in, kept by the pod itself (a file in its
    home for ``run``; in memory for simulated pods). A round counts once its masked input left
    the pod, whatever the service later does with it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._rounds: dict[str, list[int]] = {}
        if path is not None and path.exists():
            raw = json.loads(path.read_text("utf-8"))
            self._rounds = {str(k): sorted({int(r) for r in v}) for k, v in raw.items()}

    def rounds(self, request_id: str) -> int:
        return len(self._rounds.get(request_id, []))

    def record(self, request_id: str, round_id: int) -> None:
        used = self._rounds.setdefault(request_id, [])
        if round_id in used:
            return
        used.append(round_id)
        if self.path is not None:
            write_private(self.path, json.dumps(self._rounds, sort_keys=True).encode("utf-8"))

    def epsilon(self, request_id: str, plan: PlanPrivacy) -> float:
        return plan.epsilon_after(self.rounds(request_id))


def contribution(
    result: LocalResult, plan: PlanPrivacy, spec: ModelSpec
) -> dict[str, npt.NDArray[np.floating[Any]]]:
    """The vector parts a pod adds to the sum: weighted clipped update (noised under DP),
    its weight, and the evaluation sums of the global model on the pod's held-out split.

    Every parameter comes from the verified plan, none from the task: the noise share is sized
    for the plan's minimum survivor count (DESIGN.md section 6), whatever a round claims."""
    if plan.dp is not None:
        weight = 1.0  # DP requests use uniform weighting
        update = privatize(
            result.update,
            clip_norm=plan.dp.clip_norm,
            noise_multiplier=plan.dp.noise_multiplier,
            min_survivors=plan.min_participants,
        )
    else:
        cap = plan.max_examples
        weight = min(result.num_examples, cap) / cap
        if spec.training.algorithm.get("type", "fedavg") != "fedavg":
            # FedNova: the update normalised by the pod's local steps, and those steps.
            parts = federated_parts(spec, result, weight=weight, clip_norm=plan.update_clip)
            return {
                **{k: np.asarray(v) for k, v in parts.items()},
                **_evaluation(result),
            }
        update = weight * clip_l2(result.update, plan.update_clip)
    return {
        "update": np.asarray(update, dtype=np.float32),
        "weight": np.array([weight]),
        **_evaluation(result),
    }


def _evaluation(result: LocalResult) -> dict[str, npt.NDArray[np.floating[Any]]]:
    """The evaluation sums of the global model on the pod's held-out split, and its
    explanation sums there (per-class counts, attributions: ``training.modelspec.explain``)."""
    return {
        "eval_loss": np.array([result.evaluation.loss_sum]),
        "eval_correct": np.array([float(result.evaluation.correct)]),
        "eval_examples": np.array([float(result.evaluation.examples)]),
        **result.explanation,
        # Group value: the candidates (last round's model without one group) on the same split.
        **value_parts([(e.loss_sum, e.correct) for e in result.candidates]),
    }
