"""Notices, consents and receipts per language; the pod's plan check for any language."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from consent import receipts, services
from consent.models import Consent, ConsentEvent, PrivacyNotice
from consent.notices import notice_hash
from dataspace.demo import demo_request_spec, demo_weights
from dataspace.errors import Conflict
from pods.agent.consent import check_task, verify_receipt
from pods.agent.protocol import plan_hash
from tests.factories import ProviderFactory, UserFactory, breast_category, open_request
from training.models import ModelRequest
from training.services import model_request_create

pytestmark = pytest.mark.django_db

FR_TITLE = "Dépistage du cancer du sein : un modèle de risque partagé"
FR_PURPOSE = "Entraîner un modèle qui aide les radiologues à distinguer les masses bénignes."


def translated_request(**texts: Any) -> ModelRequest:
    breast_category()
    spec = demo_request_spec()
    spec.update(texts)
    return model_request_create(provider=ProviderFactory(), spec=spec, weights=demo_weights(spec))


def pod_accepts(consent: Consent) -> None:
    """What a pod does before its first round: verify the receipt, recompute the plan hash."""
    model_request = consent.model_request
    receipt = verify_receipt(receipts.receipt_signed(consent), receipts.public_jwks())
    check_task(
        receipt=receipt,
        request_id=str(model_request.pk),
        spec=model_request.spec,
        weights_sha256=hashlib.sha256(model_request.weights.open("rb").read()).hexdigest(),
        now=timezone.now(),
    )


def test_each_language_has_its_own_notice_text_and_hash() -> None:
    model_request = open_request()
    notices = {code: services.notice_current(model_request, code) for code in ("en", "fr", "de")}
    assert [notices[c].language for c in ("en", "fr", "de")] == ["en", "fr", "de"]
    assert len({n.content_hash for n in notices.values()}) == 3
    assert notices["fr"].sections[0]["heading"] == "Qui fait la demande"
    assert notices["de"].sections[0]["heading"] == "Wer fragt"
    assert "## What leaves your device" in notices["en"].text
    assert "## Ce qui quitte votre appareil" in notices["fr"].text
    assert "## Was Ihr Gerät verlässt" in notices["de"].text
    for notice in notices.values():  # the hash covers exactly the sections and their language
        assert notice.content_hash == notice_hash(notice.sections, notice.language)
    # The default-language notice is the one in the request's own plan hash.
    assert model_request.plan_hash == plan_hash(
        model_request.spec, model_request.weights_sha256, notices["en"].content_hash
    )


def test_a_notice_is_rendered_once_per_language() -> None:
    model_request = open_request()
    first = services.notice_current(model_request, "fr")
    again = services.notice_current(model_request, "fr")
    assert first.pk == again.pk
    assert PrivacyNotice.objects.filter(model_request=model_request, language="fr").count() == 1


def test_notice_names_the_language_of_untranslated_provider_text() -> None:
    model_request = open_request()  # the demo spec's purpose is English only
    fr = services.notice_current(model_request, "fr")
    purpose = fr.sections[1]["paragraphs"]
    assert purpose[0] == model_request.purpose
    assert "uniquement en anglais" in purpose[1]
    assert fr.sections[1]["first_paragraph_language"] == "en"  # <p lang="en"> on the page
    de = services.notice_current(model_request, "de")
    assert "nur auf Englisch verfasst" in de.sections[1]["paragraphs"][1]
    en = services.notice_current(model_request, "en")
    assert not any("wrote this purpose" in p for p in en.sections[1]["paragraphs"])
    assert "first_paragraph_language" not in en.sections[1]


def test_provider_text_in_the_readers_language_where_the_spec_gives_it() -> None:
    model_request = translated_request(
        title={"en": "Breast screening", "fr": FR_TITLE},
        purpose={"en": "Train a model for radiologists.", "fr": FR_PURPOSE},
    )
    assert model_request.title == "Breast screening"  # the spec's own language (default en)
    fr = services.notice_current(model_request, "fr")
    assert fr.sections[1]["paragraphs"][0] == FR_PURPOSE
    assert not any("uniquement" in p for p in fr.sections[1]["paragraphs"])
    de = services.notice_current(model_request, "de")  # no German text: English, said so
    assert de.sections[1]["paragraphs"][0] == "Train a model for radiologists."
    assert "auf Englisch" in de.sections[1]["paragraphs"][1]
    assert model_request.texts.title_in("fr") == (FR_TITLE, "fr")
    assert model_request.texts.title_in("de") == ("Breast screening", "en")


def test_a_spec_written_in_french_says_so_in_the_english_notice() -> None:
    model_request = translated_request(language="fr", title=FR_TITLE, purpose=FR_PURPOSE)
    assert model_request.title == FR_TITLE
    en = services.notice_current(model_request, "en")
    assert en.sections[1]["paragraphs"][:2] == [
        FR_PURPOSE,
        f"{model_request.provider.name} wrote this purpose in French only; "
        "it is shown as they wrote it.",
    ]


def test_consent_in_french_records_the_french_notice_and_its_plan(person: User) -> None:
    model_request = open_request()
    fr = services.notice_current(model_request, "fr")
    consent = services.consent_grant(
        user=person, model_request=model_request, seen_notice_hash=fr.content_hash, language="fr"
    )
    assert consent.notice == fr
    assert consent.notice_hash == fr.content_hash
    assert consent.plan_hash == plan_hash(
        model_request.spec, model_request.weights_sha256, fr.content_hash
    )
    assert consent.plan_hash != model_request.plan_hash  # another notice, so another plan hash
    assert ConsentEvent.objects.get(consent=consent).notice_hash == fr.content_hash
    receipt = receipts.receipt_build(consent)
    assert receipt["notice"]["language"] == "fr"
    assert receipt["notice"]["hash"] == fr.content_hash
    assert receipt["purpose"]["model_request"]["plan_hash"] == consent.plan_hash
    pod_accepts(consent)  # the pod's own check holds for a consent given in French


def test_consent_in_english_keeps_the_requests_plan_hash(person: User) -> None:
    model_request = open_request()
    consent = services.consent_grant(user=person, model_request=model_request)
    assert consent.notice.language == "en"
    assert consent.plan_hash == model_request.plan_hash
    pod_accepts(consent)


def test_receipt_gives_the_provider_text_in_the_language_read(person: User) -> None:
    model_request = translated_request(
        title={"en": "Breast screening", "fr": FR_TITLE},
        purpose={"en": "Train a model for radiologists.", "fr": FR_PURPOSE},
    )
    consent = services.consent_grant(user=person, model_request=model_request, language="fr")
    purpose = receipts.receipt_build(consent)["purpose"]
    assert purpose["description"] == FR_PURPOSE
    assert purpose["model_request"]["title"] == FR_TITLE
    pod_accepts(consent)


def test_a_hash_seen_in_another_language_is_refused_and_nothing_written(person: User) -> None:
    model_request = open_request()
    fr = services.notice_current(model_request, "fr")
    with pytest.raises(Conflict) as excinfo:
        services.consent_grant(
            user=person, model_request=model_request, seen_notice_hash=fr.content_hash
        )
    assert excinfo.value.code == "notice_changed"
    assert not Consent.objects.filter(user=person).exists()


def test_regranting_after_reading_another_language_records_that_notice(person: User) -> None:
    model_request = open_request()
    services.consent_grant(user=person, model_request=model_request)
    de = services.notice_current(model_request, "de")
    consent = services.consent_grant(user=person, model_request=model_request, language="de")
    assert consent.notice_hash == de.content_hash
    assert [e.notice_hash for e in consent.events.order_by("seq")][-1] == de.content_hash
    pod_accepts(consent)


def test_model_card_lists_each_notice_read_with_its_plan_hash(person: User) -> None:
    from training.card import card_build

    model_request = open_request()
    consent = services.consent_grant(user=person, model_request=model_request, language="fr")
    card = card_build(model_request)
    notices = {n["language"]: n for n in card["model_details"]["notices"]}
    assert set(notices) == {"en", "fr"}  # German was never read, so never rendered
    assert notices["en"]["plan_hash"] == model_request.plan_hash
    assert (notices["fr"]["hash"], notices["fr"]["plan_hash"]) == (
        consent.notice_hash,
        consent.plan_hash,
    )


@pytest.fixture
def person() -> User:
    return UserFactory()


def test_each_notice_states_intended_and_excluded_uses_and_field_kinds_in_its_language() -> None:
    model_request = open_request()
    spec = model_request.spec
    en, fr, de = (services.notice_current(model_request, code) for code in ("en", "fr", "de"))
    assert f"Intended use: {spec['intended_use']}" in en.text
    assert f"Usage prévu\u00a0: {spec['intended_use']}" in fr.text
    assert f"Vorgesehene Verwendung: {spec['intended_use']}" in de.text
    for use in spec["out_of_scope_uses"]:  # the provider's own words, introduced in each language
        assert f"- Not to be used for: {use}" in en.text
        assert f"- À ne pas utiliser pour\u00a0: {use}" in fr.text
        assert f"- Nicht zu verwenden für: {use}" in de.text
    assert "signed model card" in en.text
    assert "fiche signée du modèle" in fr.text
    assert "signierten Modellkarte" in de.text
    # the typed field's kind (issue 14) is in the reader's language too
    assert "(a number" in en.text
    assert "(un nombre" in fr.text
    assert "(eine Zahl" in de.text
