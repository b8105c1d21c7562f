"""Standing rules on the real database: they decline, notify or ask — never agree."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent import receipts, services
from consent.models import Consent, ConsentEvent, ConsentRule, RuleAction
from consent.rules import rule_matches, rule_text, rules_apply_for_user, rules_apply_to_request
from consent.selectors import consent_log_verify
from dataspace.errors import DomainError
from tests.factories import ProviderFactory, UserFactory, breast_category, open_request
from training.models import ModelRequest, PurposeCategory

pytestmark = pytest.mark.django_db

DP = {"clip_norm": 1.0, "noise_multiplier": 1.1, "target_epsilon": 4.0, "delta": 1e-5}


def _rule(user: Any, **fields: Any) -> ConsentRule:
    return ConsentRule.objects.create(user=user, **fields)


def test_a_declining_rule_declines_open_requests_and_the_log_and_receipt_name_it() -> None:
    # given a recruiting request on special-category data from a provider
    provider = ProviderFactory(name="Acme Health")
    model_request = open_request(provider=provider)
    user = UserFactory()

    # when the person writes a rule declining special-category requests from that provider
    rule = _rule(user, provider=provider, special_category=True, action=RuleAction.DECLINE)
    assert rules_apply_for_user(user) == 1

    # then the request is declined without them, by the rule, as a chained consent event
    consent = Consent.objects.get(user=user, model_request=model_request)
    assert consent.status == Consent.Status.REFUSED
    event = consent.events.get()
    assert event.method == ConsentEvent.Method.RULE
    text = "Decline requests from Acme Health on special-category (GDPR Art. 9) data automatically."
    assert event.detail == {"rule": {"id": rule.pk, "text": text}}
    assert consent_log_verify() == []
    receipt = receipts.receipt_build(consent)
    assert receipt["consent"]["status"] == "dpv:ConsentRefused"
    assert receipt["events"][0]["method"] == "rule"
    assert receipt["events"][0]["rule"] == {"id": rule.pk, "text": text}
    # applying again changes nothing
    assert rules_apply_for_user(user) == 0
    assert consent.events.count() == 1


def test_a_rule_applies_to_each_new_request_when_it_starts_recruiting() -> None:
    provider = ProviderFactory()
    user, other = UserFactory(), UserFactory()
    _rule(user, provider=provider, action=RuleAction.DECLINE)
    _rule(other, provider=ProviderFactory(), action=RuleAction.DECLINE)

    model_request = open_request(provider=provider)  # starts recruiting

    assert Consent.objects.get(user=user, model_request=model_request).status == "refused"
    assert not Consent.objects.filter(user=other).exists()  # another provider's rule


def test_a_rule_never_overrides_the_persons_own_decision_and_they_can_decide_after_it() -> None:
    model_request = open_request()
    user = UserFactory()
    services.consent_grant(user=user, model_request=model_request)
    _rule(user, action=RuleAction.DECLINE)
    assert rules_apply_for_user(user) == 0
    assert Consent.objects.get(user=user).status == Consent.Status.GIVEN

    # a rule's refusal is changed by hand with one decision
    second = UserFactory()
    _rule(second, special_category=True, action=RuleAction.DECLINE)
    rules_apply_for_user(second)
    consent = services.consent_grant(user=second, model_request=model_request)
    assert consent.status == Consent.Status.GIVEN
    assert [(e.event_type, e.method) for e in consent.events.order_by("seq")] == [
        ("refused", "rule"),
        ("given", "portal"),
    ]
    assert consent_log_verify() == []


def test_notify_and_ask_rules_decide_nothing() -> None:
    model_request = open_request()
    user = UserFactory()
    _rule(user, action=RuleAction.NOTIFY)
    _rule(user, action=RuleAction.ASK)
    assert rules_apply_for_user(user) == 0
    assert rules_apply_to_request(model_request) == 0
    assert not Consent.objects.filter(user=user).exists()


def test_the_rule_method_can_never_give_consent() -> None:
    model_request = open_request()
    user = UserFactory()
    with pytest.raises(DomainError) as raised:
        services.consent_grant(
            user=user, model_request=model_request, method=ConsentEvent.Method.RULE
        )
    assert raised.value.code == "rule_cannot_agree"
    assert not Consent.objects.filter(user=user).exists()


def test_rule_conditions_on_privacy_and_cohort() -> None:
    with_dp = open_request(dp=DP, min_participants=10)
    without_dp = open_request(title="Without noise", min_participants=10)
    user = UserFactory()
    assert rule_matches(ConsentRule(user=user, without_dp=True), without_dp)
    assert not rule_matches(ConsentRule(user=user, without_dp=True), with_dp)
    assert rule_matches(ConsentRule(user=user, epsilon_above=3.0), with_dp)
    assert not rule_matches(ConsentRule(user=user, epsilon_above=4.0), with_dp)
    assert rule_matches(ConsentRule(user=user, epsilon_above=100.0), without_dp)
    assert rule_matches(ConsentRule(user=user, cohort_below=11), with_dp)
    assert not rule_matches(ConsentRule(user=user, cohort_below=10), with_dp)
    assert not rule_matches(ConsentRule(user=user, special_category=False), with_dp)
    assert rule_matches(ConsentRule(user=user, data_category=breast_category()), with_dp)
    purpose = PurposeCategory.PUBLIC_BENEFIT
    assert not rule_matches(ConsentRule(user=user, purpose_category=purpose), with_dp)
    assert rule_text(ConsentRule(user=user, action=RuleAction.ASK)) == "Ask me about all requests."


@pytest.fixture
def art9_requests() -> list[ModelRequest]:
    provider = ProviderFactory()
    return [
        open_request(provider=provider),
        open_request(provider=provider, dp=DP, title="With noise", min_participants=20),
    ]


rule_fields = st.fixed_dictionaries(
    {
        "provider": st.sampled_from(["none", "theirs", "other"]),
        "purpose_category": st.sampled_from(["", *PurposeCategory.values]),
        "data_category": st.booleans(),
        "special_category": st.sampled_from([None, True, False]),
        "without_dp": st.booleans(),
        "epsilon_above": st.none() | st.floats(min_value=0, max_value=50, allow_nan=False),
        "cohort_below": st.none() | st.integers(min_value=2, max_value=100),
        "action": st.sampled_from(RuleAction.values),
    }
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=st.lists(rule_fields, min_size=1, max_size=3))
def test_no_rule_ever_agrees_to_special_category_data(
    art9_requests: list[ModelRequest], fields: list[dict[str, Any]]
) -> None:
    assert all(r.data_category.special_category for r in art9_requests)
    user = UserFactory()
    theirs = art9_requests[0].provider
    rules = []
    for f in fields:
        provider = {"none": None, "theirs": theirs, "other": ProviderFactory()}[f["provider"]]
        category = breast_category() if f["data_category"] else None
        rules.append(_rule(user, **{**f, "provider": provider, "data_category": category}))

    rules_apply_for_user(user)
    for model_request in art9_requests:
        rules_apply_to_request(model_request)

    # nothing is ever given by a rule; a refusal happens exactly when a declining rule matches
    for model_request in art9_requests:
        consent = Consent.objects.filter(user=user, model_request=model_request).first()
        declines = any(r.action == "decline" and rule_matches(r, model_request) for r in rules)
        if consent is None:
            assert not declines
            continue
        assert declines
        assert consent.status == Consent.Status.REFUSED
        assert {e.method for e in consent.events.all()} == {"rule"}
    assert not Consent.objects.filter(user=user, status=Consent.Status.GIVEN).exists()


def test_rules_are_in_the_persons_export_and_pages_are_theirs_only(client: Any) -> None:
    user, other = UserFactory(), UserFactory()
    rule = _rule(user, special_category=True, action=RuleAction.DECLINE)
    client.force_login(user)
    export = client.get("/consents/export.json").json()
    text = "Decline requests on special-category (GDPR Art. 9) data automatically."
    assert export["rules"] == [{"id": rule.pk, "action": "decline", "text": text}]
    assert client.get("/rules/").status_code == 200
    client.force_login(other)
    assert client.get(f"/rules/{rule.pk}/").status_code == 404
    assert client.post(f"/rules/{rule.pk}/delete/").status_code == 404
    assert ConsentRule.objects.filter(pk=rule.pk).exists()


def test_a_rule_saved_in_the_portal_applies_at_once(client: Any) -> None:
    model_request = open_request()
    user = UserFactory()
    client.force_login(user)
    response = client.post(
        "/rules/", {"special_category": "yes", "action": "decline", "epsilon_above": "-1"}
    )
    assert response.status_code == 400  # a negative budget is refused; nothing saved
    assert not ConsentRule.objects.filter(user=user).exists()
    response = client.post("/rules/", {"special_category": "yes", "action": "decline"})
    assert response.status_code == 302
    consent = Consent.objects.get(user=user, model_request=model_request)
    assert consent.status == Consent.Status.REFUSED
    assert client.get("/consents/").content.count(b"Declined automatically by your rule") == 1
