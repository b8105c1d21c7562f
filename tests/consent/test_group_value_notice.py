"""The notice states a plan's group value (issue 16) in every language, and the plan hash
covers it: a request that values groups says so before anyone consents."""

from __future__ import annotations

import pytest

from consent.notices import notice_sections, notice_text
from consent.services import notice_current
from dataspace.demo import demo_request_spec, demo_weights
from tests.factories import ProviderFactory, breast_category
from training.models import ModelRequest
from training.services import model_request_create

pytestmark = pytest.mark.django_db

SAYS = {
    "en": ("2 groups of at least 5 people", "never for one person", "left out"),
    "fr": ("2 groupes au plus, d’au moins 5 personnes", "jamais pour une seule personne", "écarté"),
    "de": ("2 Gruppen von mindestens 5 Personen", "nie für eine einzelne Person", "herausgenommen"),
}


def _request(valuation: dict[str, object] | None) -> ModelRequest:
    breast_category()
    spec = demo_request_spec(rounds=3, cohort_size=10, min_participants=5)
    if valuation is not None:
        spec["valuation"] = valuation
    return model_request_create(provider=ProviderFactory(), spec=spec, weights=demo_weights(spec))


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_the_notice_states_group_value_and_robust_mode(language: str) -> None:
    text = notice_text(notice_sections(_request({"groups": 2, "robust": True}), language))
    for phrase in SAYS[language]:
        assert phrase in text


def test_without_robust_mode_nothing_is_said_to_be_left_out() -> None:
    text = notice_text(notice_sections(_request({"groups": 2}), "en"))
    assert "never for one person" in text and "left out" not in text


def test_a_plan_without_groups_says_nothing_of_them_and_hashes_differently() -> None:
    plain = _request(None)
    grouped = _request({"groups": 2})
    assert "groups of at least" not in notice_text(notice_sections(plain, "en"))
    assert plain.plan_hash != grouped.plan_hash
    assert notice_current(plain).content_hash != notice_current(grouped).content_hash
