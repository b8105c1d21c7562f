"""The signed model card of a request's latest model (fields after Mitchell et al. 2019,
"Model Cards for Model Reporting").

Every figure on it is what the service already holds or publishes: the plan (spec, hashes), the
catalog's field schemas, aggregate consent counts, and per round the decoded cohort sums
(federated evaluation, per-class results and feature importance under the masks) with counts
rounded as the round records publish them. Nothing on it is computed from one pod's update or
data, and no person is named. The card is canonical JSON signed with the service's Ed25519 key,
the same key and code as consent receipts (:mod:`consent.receipts`), so anyone can verify it
with the published JWK Set and a standard Ed25519 implementation.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from consent.receipts import sign
from training.modelspec import ModelSpec, validate_spec
from training.modelspec.explain import METHOD, ranking
from training.rounds.model_update import COUNT_GRANULARITY

from .models import ModelRequest, TrainingRound
from .selectors import model_version_latest, notice_versions
from .serializers import consent_counts

CARD_VERSION = "dataspace-model-card/1"
ENVELOPE = "card"


def _fields(model_request: ModelRequest) -> list[dict[str, Any]]:
    category = model_request.data_category
    roles = {name: "feature" for name in model_request.features}
    if model_request.label:
        roles[model_request.label] = "label"
    out = []
    for name, role in roles.items():
        schema = category.field(name) or {}
        out.append(
            {
                "name": name,
                "role": role,
                "type": schema.get("type"),
                "unit": schema.get("unit") or None,
                "description": schema.get("description"),
            }
        )
    return out


def _round_entry(training_round: TrainingRound) -> dict[str, Any]:
    metrics = training_round.metrics
    explanation = metrics.get("explanation") or {}
    return {
        "round": training_round.number,
        "model_evaluated": training_round.number - 1,
        "participants": training_round.survivors,
        "held_out_examples": metrics.get("eval_examples"),
        "loss": metrics.get("eval_loss"),
        "accuracy": metrics.get("eval_accuracy"),
        "per_class": [
            {k: c[k] for k in ("class", "examples", "accuracy")}
            for c in explanation.get("per_class", [])
        ],
        "feature_importance": explanation.get("feature_importance"),
        "per_class_importance": {
            str(c["class"]): c["feature_importance"] for c in explanation.get("per_class", [])
        },
        "epsilon": training_round.epsilon,
    }


def group_value_section(spec: ModelSpec, completed: list[TrainingRound]) -> dict[str, Any] | None:
    """Group value (issue 16): each round's groups (pods per group) and their values, measured
    in the next round; which group robust mode left out. Never a figure for one person."""
    if spec.valuation is None:
        return None
    by_number = {r.number: r.metrics for r in completed}
    rounds = []
    for number, metrics in sorted(by_number.items()):
        groups = metrics.get("groups") or []
        if not groups:
            continue
        valued = (by_number.get(number + 1) or {}).get("valuation") or {}
        values = {v["label"]: v for v in valued.get("values", [])}
        rounds.append(
            {
                "round": number,
                "valued_in_round": number + 1 if values else None,
                "groups": [
                    {
                        "label": g["label"],
                        "pods": g["pods"],
                        "value": values.get(g["label"], {}).get("value"),
                        "accuracy_change": values.get(g["label"], {}).get("accuracy_change"),
                        "loss_change": values.get(g["label"], {}).get("loss_change"),
                    }
                    for g in groups
                ],
                "left_out": valued.get("left_out"),
            }
        )
    return {
        "method": (
            "leave-one-group-out: value = (mean loss of the model without the group − mean "
            "loss of the model) / mean loss of the model, both scored by the next round's pods "
            "on their held-out splits under the masks; > 0 the group helped"
        ),
        "groups": spec.valuation.groups,
        "min_pods_per_group": spec.training.min_participants,
        "robust": spec.valuation.robust,
        "margin": spec.valuation.margin,
        "rounds": rounds,
    }


def _limitations(model_request: ModelRequest, completed: int) -> list[str]:
    spec = validate_spec(model_request.spec)
    items = [
        "Trained only on data of people who chose to take part; they may not represent the "
        "population the model is used on.",
        "Evaluation is federated: each pod scores the model a round started from on its own "
        "held-out split, and only the cohort's sums are revealed. There is no independent test "
        "set; the figures of round r describe the model of round r − 1.",
        f"Published counts are rounded to {COUNT_GRANULARITY} records.",
        "Feature importance is the mean absolute attribution of the true class's logit "
        "(integrated gradients); it shows what the model relies on, not what causes the outcome.",
    ]
    if spec.privacy.dp is None:
        items.append(
            "No differential privacy: the revealed sums (model updates, evaluation and "
            "attribution sums) carry no noise; secure aggregation hides each pod's own part."
        )
    else:
        items.append(
            "Differential privacy noise is added to the model updates only; the evaluation and "
            "attribution sums are revealed under secure aggregation without noise."
        )
    if spec.valuation is not None:
        items.append(
            "Group values lag one round: a round's groups are scored by the next round's pods, "
            "so the last round's groups are not valued"
            + (", and its model includes every group." if spec.valuation.robust else ".")
        )
    if completed < model_request.rounds:
        items.append(f"Training ran {completed} of the {model_request.rounds} planned rounds.")
    return items


def card_build(model_request: ModelRequest) -> dict[str, Any]:
    """The card's content for the request's latest model."""
    spec = validate_spec(model_request.spec)
    raw = model_request.spec
    latest = model_version_latest(model_request)
    completed = list(
        model_request.rounds_run.filter(status=TrainingRound.Status.COMPLETED).order_by("number")
    )
    rounds = [_round_entry(r) for r in completed]
    last_importance = next(
        (r["feature_importance"] for r in reversed(rounds) if r["feature_importance"]), None
    )
    provider = model_request.provider
    return {
        "version": CARD_VERSION,
        "schema": 'Mitchell et al. 2019, "Model Cards for Model Reporting"',
        "issued_at": timezone.now().isoformat(),
        "issuer": {"name": settings.CONTROLLER_NAME, "url": settings.SITE_URL},
        "model_details": {
            "request": str(model_request.pk),
            "title": model_request.title,
            "provider": {"name": provider.name, "contact": provider.contact_email},
            "status": model_request.status,
            "plan_hash": model_request.plan_hash,
            "notices": notice_versions(model_request),
            "initial_weights_sha256": model_request.weights_sha256,
            "model": {"round": latest.round_number, "sha256": latest.sha256},
            "layers": [layer["type"] for layer in raw["model"]["layers"]],
            "parameters": spec.parameter_count,
            "spec": raw,
        },
        "intended_use": {
            "purpose": model_request.purpose,
            "purpose_category": model_request.purpose_category,
            "intended_use": spec.card.intended_use,
            "out_of_scope_uses": list(spec.card.out_of_scope_uses),
        },
        "training_data": {
            "category": model_request.data_category.slug,
            "category_title": model_request.data_category.title,
            "special_category": model_request.data_category.special_category,
            "fields": _fields(model_request),
            "people_consented": consent_counts(model_request)["given"],
            "cohort_per_round": [
                {"round": r["round"], "pods": r["participants"], "examples": r["held_out_examples"]}
                for r in rounds
            ],
        },
        "training": {
            "strategy": dict(spec.training.algorithm),
            "server_optimizer": dict(spec.training.server_optimizer),
            **{
                k: v
                for k, v in raw["training"].items()
                if k not in ("algorithm", "server_optimizer")
            },
        },
        "privacy": {
            "secure_aggregation": {
                "protocol": "SecAgg+ (Bell et al. 2020)",
                "threshold_fraction": model_request.secagg_threshold,
                "min_participants": model_request.min_participants,
                "cohort_size": model_request.cohort_size,
            },
            "differential_privacy": model_request.dp,
            "epsilon": model_request.epsilon_spent if model_request.dp else None,
            "accounting": "RDP against the service, no amplification by subsampling (q = 1)",
            "count_granularity": COUNT_GRANULARITY,
        },
        "evaluation": {
            "method": "federated evaluation under secure aggregation, on each pod's held-out split",
            "rounds": [
                {k: r[k] for k in ("round", "model_evaluated", "participants")}
                | {k: r[k] for k in ("held_out_examples", "loss", "accuracy", "per_class")}
                for r in rounds
            ],
        },
        "explanations": {
            "method": METHOD,
            "rounds": [
                {
                    "round": r["round"],
                    "feature_importance": r["feature_importance"],
                    "per_class": r["per_class_importance"],
                }
                for r in rounds
                if r["feature_importance"]
            ],
            "ranking": ranking(last_importance) if last_importance else [],
        },
        **({"group_value": value} if (value := group_value_section(spec, completed)) else {}),
        "limitations": _limitations(model_request, len(completed)),
    }


def card_signed(model_request: ModelRequest) -> dict[str, Any]:
    """``{"card": …, "signature": {alg, crv, kid, value}}``."""
    return sign(card_build(model_request), envelope=ENVELOPE)
