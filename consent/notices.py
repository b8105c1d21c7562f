"""Render a model request's privacy notice in plain language, in each of the portal's languages.

The notice is built as structured sections; the portal renders exactly these sections and the
content hash covers exactly them and their language, so "the notice the user saw" is a
checkable fact. Each language has its own text and hash. The provider's own words (purpose) are
shown in the reader's language when the spec gives them in it, and otherwise as written, with a
sentence naming their language.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from dataspace.models import describe_field
from pods.agent.protocol import canonical_json
from training.models import ModelRequest

Section = dict[str, Any]

# "The provider wrote this text …": the language a text is in, as a phrase.
IN_LANGUAGE = {
    "en": pgettext_lazy("text language", "in English"),
    "fr": pgettext_lazy("text language", "in French"),
    "de": pgettext_lazy("text language", "in German"),
}


def notice_languages() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def _field_line(category_field: dict[str, Any]) -> str:
    """``name (kind, unit): description`` — e.g. ``age (a whole number from 18 to 110, in
    years): …``; the kind and unit come from the catalog's typed field."""
    kind = describe_field(category_field)
    kind = f" ({kind})" if kind else ""
    return f"{category_field['name']}{kind}: {category_field.get('description', '')}".strip()


def _in_language(language: str) -> str:
    return str(IN_LANGUAGE.get(language, language))


def _privacy(model_request: ModelRequest) -> list[str]:
    figures = {
        "cohort": model_request.cohort_size,
        "minimum": model_request.min_participants,
        "threshold": round(model_request.secagg_threshold * 100),
        "rounds": model_request.rounds,
    }
    paragraphs = [
        _(
            "Secure aggregation: your device trains in a group of up to %(cohort)s people and "
            "never fewer than %(minimum)s; it shares its keys with a neighbourhood of that group, "
            "and at least %(threshold)s%% of a neighbourhood must take part before anything is "
            "revealed. Your device refuses smaller groups or thresholds, whatever the service "
            "asks, and takes part in at most %(rounds)s rounds of this plan."
        )
        % figures
    ]
    if model_request.dp:
        dp = model_request.dp
        paragraphs += [
            _(
                "On top of secure aggregation, this request uses differential privacy: each "
                "device limits how much its update can change the model (clipping norm "
                "%(clip)s) and adds random noise, so that the published model reveals little "
                "about any one person."
            )
            % {"clip": dp["clip_norm"]},
            _(
                "The noise multiplier is %(noise)s; the noise is sized for the smallest group "
                "allowed (%(minimum)s people), so a smaller group is never formed in your name."
            )
            % {"noise": dp["noise_multiplier"], "minimum": model_request.min_participants},
            _(
                "The total privacy budget is ε = %(epsilon)s with δ = %(delta)s, counted as the "
                "coordinating service itself sees it: it knows who took part in each round, so "
                "no discount for random selection is taken. Training stops before the budget "
                "would be exceeded; your device keeps its own count and refuses a round that "
                "would exceed it. You can see the budget spent on you in your consent history."
            )
            % {"epsilon": dp["target_epsilon"], "delta": dp["delta"]},
        ]
    else:
        paragraphs.append(
            _(
                "This request does not add differential-privacy noise. Secure aggregation still "
                "hides your individual update; the trained model itself is not protected by a "
                "formal privacy budget."
            )
        )
    paragraphs.append(
        _(
            "After each round the service publishes only group totals: accuracy, loss and the "
            "number of examples evaluated, rounded to the nearest ten, so that comparing two "
            "rounds does not reveal how many records one device holds."
        )
    )
    paragraphs.append(
        _(
            "Your device also adds, inside the same masked update, how well the model does on "
            "each outcome and how much it relies on each field (an explanation of the model on "
            "your held-out records). Only the group's totals are revealed; they go on the "
            "model's signed model card, which you can read if your device took part."
        )
    )
    return paragraphs


def _purpose_section(model_request: ModelRequest, language: str) -> Section:
    """The provider's purpose, in the reader's language where it gave one; otherwise as written,
    marked with its language (for screen readers) and said to be in it."""
    written_in = model_request.texts.purpose_in(language)[1]
    # What the provider states the model is for and must not be used for (its model card),
    # as the provider wrote it.
    spec = model_request.spec
    intended = (
        [_("Intended use: %(use)s") % {"use": spec["intended_use"]}]
        if spec.get("intended_use")
        else []
    )
    section: Section = {
        "heading": _("What it is for"),
        "paragraphs": [*_purpose(model_request, language), *intended],
        "bullets": [
            _("Not to be used for: %(use)s") % {"use": use}
            for use in spec.get("out_of_scope_uses", [])
        ],
    }
    if written_in != language:
        section["first_paragraph_language"] = written_in
    return section


def _purpose(model_request: ModelRequest, language: str) -> list[str]:
    texts = model_request.texts
    purpose, written_in = texts.purpose_in(language)
    paragraphs = [purpose]
    if written_in != language:
        paragraphs.append(
            _("%(provider)s wrote this purpose %(in_language)s only; it is shown as they wrote it.")
            % {"provider": model_request.provider.name, "in_language": _in_language(written_in)}
        )
    paragraphs.append(
        _("Purpose category: %(category)s.")
        % {"category": model_request.get_purpose_category_display()}
    )
    return paragraphs


def _group_value(model_request: ModelRequest) -> list[str]:
    """What the plan's group value (issue 16, ``valuation`` in the spec) reveals, if it has one."""
    valuation = (model_request.spec or {}).get("valuation")
    if not isinstance(valuation, dict):
        return []
    out = [
        _(
            "This request measures how much groups of people helped the model: each round's "
            "people are split into up to %(groups)s groups of at least %(minimum)s people, and "
            "the sum of each group is revealed on its own (not only the whole round's). A value "
            "is computed for each group, never for one person."
        )
        % {"groups": valuation.get("groups"), "minimum": model_request.min_participants},
        _(
            "To measure it, the models trained without one group are sent to the next round's "
            "pods, which test them on their own data; from them a group's combined update can "
            "be worked out, never yours."
        ),
    ]
    if valuation.get("robust"):
        out.append(
            _("A group whose data clearly made the model worse is left out of that round's model.")
        )
    return out


def _sections(model_request: ModelRequest, language: str) -> list[Section]:
    provider = model_request.provider
    category = model_request.data_category
    used = [*model_request.features, *([model_request.label] if model_request.label else [])]
    fields = [_field_line(category.field(name) or {"name": name}) for name in used]
    dpo = " ".join(
        x for x in (provider.dpo_name, f"<{provider.dpo_email}>" if provider.dpo_email else "") if x
    )
    contact = _("Contact: %(email)s.") % {"email": provider.contact_email}
    if dpo:
        contact += " " + _("Data protection officer: %(dpo)s.") % {"dpo": dpo}
    data = [
        _("Only these fields of your “%(category)s” data, and nothing else:")
        % {"category": category.title}
    ]
    if language != "en":
        data.append(
            _(
                "The names and descriptions of the data fields come from the data catalogue, "
                "which is %(in_language)s."
            )
            % {"in_language": _in_language("en")}
        )
    if category.special_category:
        data.append(
            _(
                "This is a special category of personal data (GDPR Art. 9). We only use it with "
                "your explicit consent, which this page asks for."
            )
        )
    legal_basis = (
        _(
            "Your consent (GDPR Art. 6(1)(a) and Art. 9(2)(a)). Saying no has no consequences "
            "for you."
        )
        if category.special_category
        else _("Your consent (GDPR Art. 6(1)(a)). Saying no has no consequences for you.")
    )
    return [
        {
            "heading": _("Who is asking"),
            "paragraphs": [
                _("%(provider)s asks to train a model on data held on your devices.")
                % {"provider": provider.name},
                contact,
                _(
                    "The service that coordinates training is %(controller)s (contact "
                    "%(contact)s, data protection officer %(dpo)s)."
                )
                % {
                    "controller": settings.CONTROLLER_NAME,
                    "contact": settings.CONTROLLER_CONTACT,
                    "dpo": settings.CONTROLLER_DPO,
                },
            ],
        },
        _purpose_section(model_request, language),
        {"heading": _("Which of your data is used"), "paragraphs": data, "bullets": fields},
        {
            "heading": _("What happens on your device"),
            "paragraphs": [
                _(
                    "Your pod downloads the model and trains it on your own data, on your own "
                    "device, in up to %(rounds)s rounds. Your records never leave the device."
                )
                % {"rounds": model_request.rounds},
                _(
                    "Your pod checks that the model it receives is exactly the plan described "
                    "here before it trains."
                ),
            ],
        },
        {
            "heading": _("What leaves your device"),
            "paragraphs": [
                _(
                    "Only a masked model update: numbers that look random on their own. The "
                    "service can only add up the updates of a whole group and learns just that "
                    "sum, never your update or your records."
                ),
                _(
                    "Each round combines at least %(minimum)s people (from a group of up to "
                    "%(cohort)s)."
                )
                % {
                    "minimum": model_request.min_participants,
                    "cohort": model_request.cohort_size,
                },
                _("Who took part in a round is not secret: you see it in your history."),
                *_group_value(model_request),
            ],
        },
        {"heading": _("Privacy protection"), "paragraphs": _privacy(model_request)},
        {
            "heading": _("How long things are kept"),
            "paragraphs": [
                _(
                    "Records of this request and its trained models are kept for %(days)s days. "
                    "Masked updates are deleted once a round is aggregated."
                )
                % {"days": model_request.retention_days},
                _("Your consent lasts %(days)s days unless you withdraw it sooner.")
                % {"days": settings.CONSENT_TTL_DAYS},
            ],
        },
        {
            "heading": _("If you change your mind"),
            "paragraphs": [
                _(
                    "You can withdraw at any time, in one click, on “My consents”. Your pod then "
                    "takes part in no further round of this request."
                ),
                _(
                    "Models already trained with earlier rounds stay with the provider: an "
                    "update that was added into a sum cannot be taken out again."
                ),
            ],
        },
        {"heading": _("Legal basis"), "paragraphs": [legal_basis]},
    ]


def notice_sections(model_request: ModelRequest, language: str = "en") -> list[Section]:
    """The notice's sections in ``language`` (one of ``settings.LANGUAGES``)."""
    with translation.override(language):
        return _sections(model_request, language)


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
