"""The masked vector's layout, as the verified plan fixes it — on both sides.

The layout says where each part of a pod's contribution sits in the masked vector, its bound
and its fixed-point scale. The service states it in the first stage; the pod encodes its input
by it. A layout the pod took on trust would let a dishonest service isolate one pod inside a
sum: it could give every other pod a layout whose coordinates at the target's update carry a
part clamped to (almost) zero, or a coarser scale, so that the "cohort sum" there is the
target's own value. So the pod accepts only the plan's layout: the parts, their sizes and
bounds exactly as the spec (and the task's candidate count) imply, and a scale that one cohort
size the plan allows (from its minimum participants to its cohort size) gives every part.
Pure: no Django; the service builds its layout with :func:`plan_layout` too.
"""

from __future__ import annotations

from typing import Any

from training.modelspec import vector_size
from training.modelspec.explain import explanation_segments
from training.modelspec.federated import max_local_steps
from training.modelspec.spec import ModelSpec
from training.modelspec.valuation import value_segments
from training.secagg.encoding import Layout, scale_bits
from training.secagg.errors import SecAggError


class LayoutRefused(Exception):
    code = "layout_not_in_plan"


def plan_layout(spec: ModelSpec, cohort: int, candidates: int = 0) -> Layout:
    """The masked vector's layout: the model's coordinates plus weight and evaluation sums,
    then the explanation parts (per-class counts, attribution sums), then — group value —
    the evaluation sums of each of the last round's ``candidates``."""
    privacy = spec.privacy
    algorithm = spec.training.algorithm.get("type")
    dim = vector_size(spec)
    # SCAFFOLD: each pod's control-variate delta Δc_i, model-sized, rides in the sum.
    scaffold: dict[str, Any] = (
        {"control_dim": dim, "control_clip": float(spec.training.algorithm["control_clip"])}
        if algorithm == "scaffold"
        else {}
    )
    return Layout.for_training(
        model_dim=dim,
        max_clients=cohort,
        clip_norm=privacy.dp.clip_norm if privacy.dp else privacy.update_clip,
        max_weight=1,
        max_eval_examples=privacy.max_examples,
        # FedNova: each pod's (weighted) effective number of local steps rides in the sum.
        max_local_steps=(
            max_local_steps(spec, privacy.max_examples) if algorithm == "fednova" else 0.0
        ),
        **scaffold,
    ).with_parts(
        [*explanation_segments(spec), *value_segments(candidates, privacy.max_examples)],
        max_clients=cohort,
    )


def check_layout(stated: Any, spec: ModelSpec, candidates: int) -> Layout:
    """The stated layout if it is the plan's for some cohort size the plan allows; otherwise
    :class:`LayoutRefused` (before any key is advertised: nothing is revealed)."""
    try:
        layout = Layout.from_dict(stated)
    except (KeyError, TypeError, ValueError):
        raise LayoutRefused() from None
    lowest = max(2, spec.training.min_participants)
    highest = max(lowest, spec.training.cohort_size)
    try:
        expected = plan_layout(spec, lowest, candidates)
    except SecAggError:
        raise LayoutRefused() from None
    if [(s.name, s.size, s.bound) for s in layout.segments] != [
        (s.name, s.size, s.bound) for s in expected.segments
    ]:
        raise LayoutRefused()
    bits = [s.bits for s in layout.segments]
    for cohort in range(lowest, highest + 1):
        try:
            scales = [scale_bits(cohort, s.bound) for s in expected.segments]
        except SecAggError:
            break  # larger cohorts do not fit this bound either
        if scales == bits:
            return layout
        if any(f < g for f, g in zip(scales, bits, strict=True)):
            break  # a scale only shrinks as the cohort grows
    raise LayoutRefused()
