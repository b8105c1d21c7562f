"""Standing preferences: rules a person writes once, applied to every request that recruits.

A rule matches a request when every condition it sets holds (provider, purpose category, data
category, special-category data, no or weak differential privacy, small minimum group). Its
action is one of :class:`~consent.models.RuleAction`: decline automatically, notify me, or ask
me (the default). No rule ever agrees — consent, and above all explicit consent to
special-category data (GDPR Art. 9(2)(a)), is always the person's own act; ``consent_grant``
refuses the ``rule`` method outright.

A declining rule's decision is an ordinary consent event (method ``rule``, with the rule's id
and its text in the hash-chained log and on the receipt). Rules apply to requests already
recruiting when a rule is saved (:func:`rules_apply_for_user`), to each new request when it
starts recruiting (:func:`rules_apply_to_request`), and again on every notification tick
(:func:`rules_apply_all`), so a decision missed by a crash is made later. A person's own
decision is never overridden.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from dataspace.errors import DomainError
from training.models import ModelRequest, PurposeCategory

from .models import Consent, ConsentEvent, ConsentRule, RuleAction
from .services import consent_refuse

logger = logging.getLogger(__name__)

# Strongest first: a declining rule wins over one that notifies, which wins over "ask me".
ACTION_ORDER = (RuleAction.DECLINE, RuleAction.NOTIFY, RuleAction.ASK)


def rule_matches(rule: ConsentRule, model_request: ModelRequest) -> bool:
    """Whether every condition the rule sets holds for the request."""
    category = model_request.data_category
    epsilon = model_request.epsilon_budget
    checks = (
        rule.provider_id is None or rule.provider_id == model_request.provider_id,
        not rule.purpose_category or rule.purpose_category == model_request.purpose_category,
        rule.data_category_id is None or rule.data_category_id == category.pk,
        rule.special_category is None or rule.special_category == category.special_category,
        not rule.without_dp or epsilon is None,
        rule.epsilon_above is None or epsilon is None or epsilon > rule.epsilon_above,
        rule.cohort_below is None or model_request.min_participants < rule.cohort_below,
    )
    return all(checks)


def rule_decision(
    rules: Iterable[ConsentRule], model_request: ModelRequest
) -> tuple[str, ConsentRule | None]:
    """The action for a request under a person's rules, and the rule that decided it: the
    strongest action of the matching rules (the oldest rule among equals); "ask" when none
    matches."""
    matching = sorted(
        (r for r in rules if rule_matches(r, model_request)),
        key=lambda r: (ACTION_ORDER.index(RuleAction(r.action)), r.pk),
    )
    if not matching:
        return RuleAction.ASK, None
    return matching[0].action, matching[0]


def rule_text(rule: ConsentRule) -> str:
    """The rule in one plain sentence, as stored in the consent log and shown in the portal."""
    conditions: list[str] = []
    if rule.provider_id is not None:
        conditions.append(_("from %(provider)s") % {"provider": rule.provider.name})  # type: ignore[union-attr]
    if rule.purpose_category:
        label = PurposeCategory(rule.purpose_category).label
        conditions.append(_("for the purpose “%(purpose)s”") % {"purpose": label})
    if rule.data_category_id is not None:
        title = rule.data_category.title  # type: ignore[union-attr]
        conditions.append(_("on “%(category)s” data") % {"category": title})
    if rule.special_category is True:
        conditions.append(_("on special-category (GDPR Art. 9) data"))
    elif rule.special_category is False:
        conditions.append(_("on data that is not special-category"))
    if rule.without_dp:
        conditions.append(_("without differential privacy"))
    if rule.epsilon_above is not None:
        budget = {"epsilon": rule.epsilon_above}
        conditions.append(_("with no privacy budget or one above ε = %(epsilon)s") % budget)
    if rule.cohort_below is not None:
        conditions.append(
            _("that may train in groups smaller than %(size)s people") % {"size": rule.cohort_below}
        )
    what = " ".join([_("requests"), *conditions]) if conditions else _("all requests")
    action = {
        RuleAction.DECLINE: _("Decline %(what)s automatically."),
        RuleAction.NOTIFY: _("Notify me of %(what)s."),
        RuleAction.ASK: _("Ask me about %(what)s."),
    }[RuleAction(rule.action)]
    return action % {"what": what}


def rules_of(user: User) -> QuerySet[ConsentRule]:
    return ConsentRule.objects.filter(user=user).select_related("provider", "data_category")


def _decline_by_rule(
    user: User, model_request: ModelRequest, rule: ConsentRule, now: datetime
) -> bool:
    detail = {"rule": {"id": rule.pk, "text": rule_text(rule)}}
    try:
        consent_refuse(
            user=user,
            model_request=model_request,
            method=ConsentEvent.Method.RULE,
            now=now,
            detail=detail,
        )
    except DomainError as exc:  # e.g. the request closed meanwhile; the next tick sees it
        logger.info("rule %s did not apply to request %s: %s", rule.pk, model_request.pk, exc.code)
        return False
    return True


def _undecided_open_requests(user: User) -> QuerySet[ModelRequest]:
    decided = Consent.objects.filter(user=user, model_request=OuterRef("pk"))
    return (
        ModelRequest.objects.filter(status__in=ModelRequest.OPEN_STATUSES)
        .filter(~Exists(decided))
        .select_related("provider", "data_category")
        .order_by("recruiting_at", "pk")
    )


def rules_apply_for_user(user: User, now: datetime | None = None) -> int:
    """Apply a person's declining rules to every open request they have not decided on.
    Returns how many requests were declined."""
    now = now or timezone.now()
    rules = [r for r in rules_of(user) if r.action == RuleAction.DECLINE]
    if not rules:
        return 0
    declined = 0
    for model_request in _undecided_open_requests(user):
        action, rule = rule_decision(rules, model_request)
        if action == RuleAction.DECLINE and rule is not None:
            declined += _decline_by_rule(user, model_request, rule, now)
    return declined


def rules_apply_to_request(model_request: ModelRequest, now: datetime | None = None) -> int:
    """Apply everyone's declining rules to one request (when it starts recruiting)."""
    now = now or timezone.now()
    if model_request.status not in ModelRequest.OPEN_STATUSES:
        return 0
    decided = Consent.objects.filter(model_request=model_request).values("user_id")
    rules = (
        ConsentRule.objects.filter(action=RuleAction.DECLINE)
        .exclude(user_id__in=decided)
        .select_related("user", "provider", "data_category")
        .order_by("user_id", "pk")
    )
    by_user: dict[int, list[ConsentRule]] = {}
    for rule in rules:
        by_user.setdefault(rule.user_id, []).append(rule)
    declined = 0
    for user_rules in by_user.values():
        action, deciding = rule_decision(user_rules, model_request)
        if action == RuleAction.DECLINE and deciding is not None:
            declined += _decline_by_rule(deciding.user, model_request, deciding, now)
    return declined


def rules_apply_all(now: datetime | None = None) -> int:
    """The scheduler's catch-up pass: every declining rule against every open request."""
    now = now or timezone.now()
    users = User.objects.filter(
        pk__in=ConsentRule.objects.filter(action=RuleAction.DECLINE).values("user_id")
    ).order_by("pk")
    return sum(rules_apply_for_user(user, now) for user in users)


def rule_of_event(event: ConsentEvent) -> dict[str, object] | None:
    """The rule (id and text) that made a decision, as recorded in the log, if one did."""
    rule = event.detail.get("rule") if isinstance(event.detail, dict) else None
    return rule if isinstance(rule, dict) else None
