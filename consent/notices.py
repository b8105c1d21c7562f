"""Render a model request's privacy notice in plain language.

The notice is built as structured sections; the portal renders exactly these sections and the
content hash covers exactly them, so "the notice the user saw" is a checkable fact.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings

from dataspace.models import describe_field
from pods.agent.protocol import canonical_json
from training.models import ModelRequest

Section = dict[str, Any]


def _field_line(category_field: dict[str, Any]) -> str:
    """``name (kind, unit): description`` — e.g. ``age (a whole number from 18 to 110, in
    years): …``; the kind and unit come from the catalog's typed field."""
    kind = describe_field(category_field)
    kind = f" ({kind})" if kind else ""
    return f"{category_field['name']}{kind}: {category_field.get('description', '')}".strip()


def notice_sections(model_request: ModelRequest) -> list[Section]:
    provider = model_request.provider
    category = model_request.data_category
    used = [*model_request.features, *([model_request.label] if model_request.label else [])]
    fields = [_field_line(category.field(name) or {"name": name}) for name in used]
    dpo = " ".join(
        x for x in (provider.dpo_name, f"<{provider.dpo_email}>" if provider.dpo_email else "") if x
    )
    special = (
        [
            "This is a special category of personal data (GDPR Art. 9). We only use it with your "
            "explicit consent, which this page asks for."
        ]
        if category.special_category
        else []
    )
    if model_request.dp:
        dp = model_request.dp
        privacy = [
            "On top of secure aggregation, this request uses differential privacy: each device "
            f"limits how much its update can change the model (clipping norm {dp['clip_norm']}) "
            "and adds random noise, so that the published model reveals little about any one "
            "person.",
            f"The noise multiplier is {dp['noise_multiplier']}; the noise is sized for the "
            f"smallest group allowed ({model_request.min_participants} people), so a smaller "
            "group is never formed in your name.",
            f"The total privacy budget is ε = {dp['target_epsilon']} with δ = {dp['delta']}, "
            "counted as the coordinating service itself sees it: it knows who took part in each "
            "round, so no discount for random selection is taken. Training stops before the "
            "budget would be exceeded; your device keeps its own count and refuses a round that "
            "would exceed it. You can see the budget spent on you in your consent history.",
        ]
    else:
        privacy = [
            "This request does not add differential-privacy noise. Secure aggregation still "
            "hides your individual update; the trained model itself is not protected by a "
            "formal privacy budget.",
        ]
    privacy = [
        f"Secure aggregation: your device trains in a group of up to "
        f"{model_request.cohort_size} people and never fewer than "
        f"{model_request.min_participants}; it shares its keys with a neighbourhood of that "
        f"group, and at least {round(model_request.secagg_threshold * 100)}% of a neighbourhood "
        "must take part before anything is revealed. Your device refuses smaller groups or "
        "thresholds, whatever the service asks, and takes part in at most "
        f"{model_request.rounds} rounds of this plan.",
        *privacy,
        "After each round the service publishes only group totals: accuracy, loss and the "
        "number of examples evaluated, rounded to the nearest ten, so that comparing two rounds "
        "does not reveal how many records one device holds.",
        "Your device also adds, inside the same masked update, how well the model does on each "
        "outcome and how much it relies on each field (an explanation of the model on your "
        "held-out records). Only the group's totals are revealed; they go on the model's "
        "signed model card, which you can read if your device took part.",
    ]
    # What the provider states the model is for and must not be used for (its model card).
    spec = model_request.spec
    intended = [f"Intended use: {spec['intended_use']}"] if spec.get("intended_use") else []
    out_of_scope = [f"Not to be used for: {use}" for use in spec.get("out_of_scope_uses", [])]
    return [
        {
            "heading": "Who is asking",
            "paragraphs": [
                f"{provider.name} asks to train a model on data held on your devices.",
                f"Contact: {provider.contact_email}."
                + (f" Data protection officer: {dpo}." if dpo else ""),
                f"The service that coordinates training is {settings.CONTROLLER_NAME} "
                f"(contact {settings.CONTROLLER_CONTACT}, data protection officer "
                f"{settings.CONTROLLER_DPO}).",
            ],
        },
        {
            "heading": "What it is for",
            "paragraphs": [
                model_request.purpose,
                f"Purpose category: {model_request.get_purpose_category_display()}.",
                *intended,
            ],
            "bullets": out_of_scope,
        },
        {
            "heading": "Which of your data is used",
            "paragraphs": [
                f"Only these fields of your “{category.title}” data, and nothing else:",
                *special,
            ],
            "bullets": fields,
        },
        {
            "heading": "What happens on your device",
            "paragraphs": [
                "Your pod downloads the model and trains it on your own data, on your own device, "
                f"in up to {model_request.rounds} rounds. Your records never leave the device.",
                "Your pod checks that the model it receives is exactly the plan described here "
                "before it trains.",
            ],
        },
        {
            "heading": "What leaves your device",
            "paragraphs": [
                "Only a masked model update: numbers that look random on their own. The service "
                "can only add up the updates of a whole group and learns just that sum, never "
                "your update or your records.",
                f"Each round combines at least {model_request.min_participants} people "
                f"(from a group of up to {model_request.cohort_size}).",
                "Who took part in a round is not secret: you see it in your history.",
            ],
        },
        {"heading": "Privacy protection", "paragraphs": privacy},
        {
            "heading": "How long things are kept",
            "paragraphs": [
                f"Records of this request and its trained models are kept for "
                f"{model_request.retention_days} days. Masked updates are deleted once a round "
                "is aggregated.",
                f"Your consent lasts {settings.CONSENT_TTL_DAYS} days unless you withdraw it "
                "sooner.",
            ],
        },
        {
            "heading": "If you change your mind",
            "paragraphs": [
                "You can withdraw at any time, in one click, on “My consents”. Your pod then "
                "takes part in no further round of this request.",
                "Models already trained with earlier rounds stay with the provider: an update "
                "that was added into a sum cannot be taken out again.",
            ],
        },
        {
            "heading": "Legal basis",
            "paragraphs": [
                "Your consent (GDPR Art. 6(1)(a)"
                + (" and Art. 9(2)(a)" if category.special_category else "")
                + "). Saying no has no consequences for you."
            ],
        },
    ]


def notice_text(sections: list[Section]) -> str:
    lines: list[str] = []
    for section in sections:
        lines.append(f"## {section['heading']}")
        lines.extend(section.get("paragraphs", []))
        lines.extend(f"- {item}" for item in section.get("bullets", []))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def notice_hash(sections: list[Section], language: str) -> str:
    return hashlib.sha256(canonical_json({"language": language, "sections": sections})).hexdigest()
