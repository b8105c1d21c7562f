"""Consent reads. Every selector that takes a user is scoped to that user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.functional import Promise as StrPromise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from pods.models import Pod
from training.models import ModelRequest, ModelVersion, RoundParticipant, TrainingRound

from .chain import ChainBreak, verify_chain
from .models import Consent, ConsentEvent, DataSubject


def consent_active(*, user: User, model_request: ModelRequest, at: datetime | None = None) -> bool:
    """Whether the person's consent to the request is given and not expired at ``at``."""
    at = at or timezone.now()
    return Consent.objects.filter(
        user=user,
        model_request=model_request,
        status=Consent.Status.GIVEN,
        expires_at__gt=at,
    ).exists()


def usable_consents(
    model_request: ModelRequest | OuterRef, at: datetime | None = None
) -> QuerySet[Consent]:
    """Consents to the request that let their person's pod train now: given, not expired at
    ``at``, training not paused. (The rounds engine's one test of "may this person take part".)
    ``model_request`` may be an ``OuterRef`` to a request, for a subquery over many requests."""
    return Consent.objects.filter(
        Q(model_request=model_request),  # a Q: the stubs' lookup check knows no OuterRef
        status=Consent.Status.GIVEN,
        expires_at__gt=at or timezone.now(),
    ).exclude(user__in=DataSubject.objects.filter(training_paused=True).values("user"))


def consent_usable(*, user: User, model_request: ModelRequest, at: datetime | None = None) -> bool:
    """Active consent and training not paused: the pod may take part in a round now."""
    return usable_consents(model_request, at).filter(user=user).exists()


def consent_for_request(*, user_id: int, request_id: uuid.UUID) -> Consent | None:
    """The person's consent (any status) to a request, with what its receipt shows."""
    return (
        Consent.objects.select_related("model_request__provider", "notice", "pod")
        .filter(user_id=user_id, model_request_id=request_id)
        .first()
    )


def consents_of(user: User) -> QuerySet[Consent]:
    return (
        Consent.objects.filter(user=user)
        .select_related("model_request__provider", "model_request__data_category", "notice", "pod")
        .prefetch_related(Prefetch("events", queryset=ConsentEvent.objects.order_by("seq")))
        .order_by("-decided_at")
    )


def consent_of(user: User, consent_id: uuid.UUID | str) -> Consent:
    """The user's consent, or 404: another person's consent does not exist for them."""
    try:
        return consents_of(user).get(pk=consent_id)
    except (Consent.DoesNotExist, ValueError, TypeError):
        raise Http404("No such consent.") from None


def open_requests() -> QuerySet[ModelRequest]:
    return ModelRequest.objects.filter(status__in=ModelRequest.OPEN_STATUSES).select_related(
        "provider", "data_category"
    )


def open_request(request_id: uuid.UUID | str) -> ModelRequest:
    try:
        return ModelRequest.objects.select_related("provider", "data_category").get(
            pk=request_id, status__in=(*ModelRequest.OPEN_STATUSES, ModelRequest.Status.COMPLETED)
        )
    except (ModelRequest.DoesNotExist, ValueError, TypeError):
        raise Http404("No such request.") from None


def held_category_slugs(user: User) -> set[str]:
    slugs: set[str] = set()
    for pod in Pod.objects.filter(owner=user, status=Pod.Status.ACTIVE):
        slugs.update(
            c["slug"] for c in pod.categories_held or [] if isinstance(c, dict) and "slug" in c
        )
    return slugs


def requests_undecided(user: User) -> QuerySet[ModelRequest]:
    decided = Consent.objects.filter(user=user, model_request=OuterRef("pk"))
    return open_requests().filter(~Exists(decided)).order_by("-recruiting_at")


def requests_awaiting_decision(user: User) -> list[ModelRequest]:
    """Open requests the person has not decided on and whose data their pods hold."""
    held = held_category_slugs(user)
    return [r for r in requests_undecided(user) if r.data_category.slug in held]


def active_pods(user: User) -> QuerySet[Pod]:
    return Pod.objects.filter(owner=user, status=Pod.Status.ACTIVE).order_by("name")


def training_paused(user: User) -> bool:
    return DataSubject.objects.filter(user=user, training_paused=True).exists()


def consent_log_verify() -> list[ChainBreak]:
    """Walk every consent's event chain; return every break found (empty when intact)."""
    breaks: list[ChainBreak] = []
    consents = Consent.objects.order_by("pk").only("pk", "status")
    for consent in consents.iterator(chunk_size=500):
        events = ConsentEvent.objects.filter(consent_id=consent.pk).order_by("seq", "pk")
        breaks.extend(verify_chain(str(consent.pk), consent.status, events))
    orphans = ConsentEvent.objects.exclude(consent_id__in=Consent.objects.values("pk"))
    breaks.extend(ChainBreak(str(e.consent_id), e.seq, "event without a consent") for e in orphans)
    return breaks


# -- participation history (DESIGN.md section 3: RoundParticipant is the person's history) ------

# Plain words for what the protocol records; codes stay in the export for machines.
ROUND_STATUS_WORDS: dict[str, StrPromise] = {
    TrainingRound.Status.ADVERTISING: _("In progress: pods are exchanging keys"),
    TrainingRound.Status.SHARING: _("In progress: pods are sharing key pieces"),
    TrainingRound.Status.COLLECTING: _("In progress: collecting masked updates"),
    TrainingRound.Status.CHECKING: _("In progress: pods are confirming who took part"),
    TrainingRound.Status.UNMASKING: _("In progress: revealing the group’s sum"),
    TrainingRound.Status.AGGREGATING: _("In progress: combining the updates"),
    TrainingRound.Status.COMPLETED: _("Completed"),
    TrainingRound.Status.ABORTED: _("Stopped before anything was revealed"),
}

STAGE_REACHED_WORDS: dict[str, StrPromise] = {
    RoundParticipant.Stage.SELECTED: _("Chosen for the group"),
    RoundParticipant.Stage.ADVERTISED: _("Sent its public keys"),
    RoundParticipant.Stage.SHARED: _("Shared key pieces with its neighbours"),
    RoundParticipant.Stage.MASKED: _("Sent its masked update"),
    RoundParticipant.Stage.CHECKED: _("Confirmed who took part"),
    RoundParticipant.Stage.UNMASKED: _("Helped reveal the group’s sum"),
}

DROPPED_AT_WORDS: dict[str, StrPromise] = {
    "selected": _("before the round began"),
    "advertise_keys": _("while pods exchanged keys"),
    "share_keys": _("while pods shared key pieces"),
    "masked_input": _("while masked updates were collected"),
    "consistency_check": _("while pods confirmed who took part"),
    "unmask": _("while the group’s sum was revealed"),
    "aggregating": _("while the updates were combined"),
}

DROP_REASON_WORDS: dict[str, StrPromise] = {
    "silent": _("Your pod did not answer in time (it may have been offline)."),
    "consent_withdrawn": _("You withdrew your consent."),
    "training_paused": _("You paused all training."),
    "consent_withdrawn_or_paused": _("Your consent was no longer active, or training was paused."),
    "out_of_order": _("Your pod answered at the wrong step of the round."),
}

DECLINE_WORDS: dict[str, StrPromise] = {
    "plan_mismatch": _("the task was not the plan you agreed to"),
    "weights_mismatch": _("the model it was sent did not match the plan you agreed to"),
    "no_consent": _("it found no consent from you for this request"),
    "consent_expired": _("your consent had expired"),
    "wrong_request": _("the consent receipt was for another request"),
    "fields_not_consented": _("the task asked for data you did not agree to share"),
    "no_data": _("it holds no data for this request"),
    "no_label": _("its data lacks what the model learns to predict"),
    "neighbourhood_below_plan": _("the service offered a smaller group than you agreed to"),
    "threshold_below_plan": _("the service asked for less protection than you agreed to"),
    "survivors_below_threshold": _("too few others were left to keep your update hidden"),
    "survivors_inconsistent": _("the service told different pods different stories"),
    "consistency_unconfirmed": _("too few others confirmed who took part"),
    "privacy_budget_exhausted": _("another round would exceed the privacy budget you agreed to"),
    "origin_not_pinned": _("the service pointed it to another web address"),
    "training_failed": _("your data did not fit the model this request trains"),
}


def drop_reason_words(code: str, declined_because: str | None = None) -> str:
    """A recorded drop reason in plain words; unknown codes are named, never hidden."""
    if not code:
        return ""
    if code in DROP_REASON_WORDS:
        return str(DROP_REASON_WORDS[code])
    if declined_because is not None:
        why = (
            str(DECLINE_WORDS[declined_because])
            if declined_because in DECLINE_WORDS
            else gettext("the task could not be run (%(code)s)") % {"code": declined_because}
        )
        return gettext("Your pod declined the task: %(why)s.") % {"why": why}
    return gettext("Your pod’s reply did not pass the protocol’s checks (%(code)s).") % {
        "code": code
    }


@dataclass(frozen=True)
class RoundTaken:
    """One round one of the person's pods was in the cohort of."""

    number: int
    attempt: int
    pod_name: str
    status: str
    stage_reached: str
    dropped_at_stage: str
    drop_reason: str
    declined_because: str | None
    model_version: int | None
    epsilon: float | None

    @property
    def contributed(self) -> bool:
        """The round published a model and this pod's update was in its sum."""
        return self.model_version is not None

    @property
    def status_words(self) -> str:
        return str(ROUND_STATUS_WORDS.get(self.status, self.status))

    @property
    def stage_reached_words(self) -> str:
        return str(STAGE_REACHED_WORDS.get(self.stage_reached, self.stage_reached))

    @property
    def dropped_at_words(self) -> str:
        return str(DROPPED_AT_WORDS.get(self.dropped_at_stage, self.dropped_at_stage))

    @property
    def drop_reason_words(self) -> str:
        return drop_reason_words(self.drop_reason, self.declined_because)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "attempt": self.attempt,
            "status": self.status,
            "stage_reached": self.stage_reached,
            "dropped_at_stage": self.dropped_at_stage or None,
            "drop_reason": self.drop_reason or None,
            "drop_reason_text": self.drop_reason_words or None,
            "contributed": self.contributed,
            "model_version": self.model_version,
            "epsilon": self.epsilon,
        }


@dataclass
class RequestTaken:
    """A model request the person's pods took part in, with every round they were drawn for."""

    request_id: uuid.UUID
    title: str
    provider: str
    status: str
    dp: bool
    epsilon_budget: float | None
    delta: float | None
    rounds: list[RoundTaken] = field(default_factory=list)

    @property
    def readable(self) -> bool:
        """Whether the portal still shows the request's page (see ``open_request``)."""
        return self.status in (*ModelRequest.OPEN_STATUSES, ModelRequest.Status.COMPLETED)

    @property
    def contributed_rounds(self) -> int:
        return sum(1 for r in self.rounds if r.contributed)

    # ε spent on the person: that of the rounds whose published model their update went into
    # (q = 1, as their pod's own ledger counts it); None without DP or before any contribution.
    epsilon_spent: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": str(self.request_id),
            "title": self.title,
            "provider": self.provider,
            "differential_privacy": self.dp,
            "epsilon_spent": self.epsilon_spent,
            "contributed_rounds": self.contributed_rounds,
            "rounds": [r.as_dict() for r in self.rounds],
        }


def participation_of(user: User) -> list[RequestTaken]:
    """Every round the person's pods were drawn for, grouped by request, newest request first.

    Two queries whatever the history's length: the person's participants with their round,
    request, provider and pod, then the model versions of those requests. Only display fields
    are loaded; no key, share, masked input or other person's row is read.
    """
    participants = (
        RoundParticipant.objects.filter(user=user)
        .select_related("round__model_request__provider", "pod")
        .only(
            "stage_reached",
            "dropped_at_stage",
            "drop_reason",
            "round_id",
            "pod_id",
            "pod__name",
            "round__number",
            "round__attempt",
            "round__status",
            "round__epsilon",
            "round__started_at",
            "round__model_request_id",
            "round__model_request__title",
            "round__model_request__dp",
            "round__model_request__status",
            "round__model_request__provider_id",
            "round__model_request__provider__name",
        )
        .order_by("round__model_request_id", "round__number", "round__attempt", "pod__name")
    )
    rows = list(participants)
    request_ids = {p.round.model_request_id for p in rows}
    versions: dict[tuple[uuid.UUID, int], ModelVersion] = {
        (v.model_request_id, v.round_number): v
        for v in ModelVersion.objects.filter(model_request_id__in=request_ids).only(
            "model_request_id", "round_number", "epsilon"
        )
    }
    taken: dict[uuid.UUID, RequestTaken] = {}
    requests: dict[uuid.UUID, ModelRequest] = {}
    latest: dict[uuid.UUID, datetime] = {}
    for p in rows:
        training_round = p.round
        model_request = training_round.model_request
        entry = taken.get(model_request.pk)
        requests[model_request.pk] = model_request
        if entry is None:
            dp = model_request.dp or None
            entry = taken[model_request.pk] = RequestTaken(
                request_id=model_request.pk,
                title=model_request.title,
                provider=model_request.provider.name,
                status=model_request.status,
                dp=dp is not None,
                epsilon_budget=float(dp["target_epsilon"]) if dp else None,
                delta=float(dp["delta"]) if dp else None,
            )
        started = training_round.started_at
        if model_request.pk not in latest or started > latest[model_request.pk]:
            latest[model_request.pk] = started
        version = versions.get((model_request.pk, training_round.number))
        contributed = (
            training_round.status == TrainingRound.Status.COMPLETED
            and p.input_in_sum
            and version is not None
        )
        epsilon = None
        if contributed and entry.dp and version is not None:
            epsilon = version.epsilon if training_round.epsilon is None else training_round.epsilon
        entry.rounds.append(
            RoundTaken(
                number=training_round.number,
                attempt=training_round.attempt,
                pod_name=p.pod.name,
                status=training_round.status,
                stage_reached=p.stage_reached,
                dropped_at_stage=p.dropped_at_stage,
                drop_reason=p.drop_reason,
                declined_because=p.declined_because,
                model_version=training_round.number if contributed else None,
                epsilon=epsilon,
            )
        )
    for entry in taken.values():
        if entry.dp and entry.contributed_rounds:
            entry.epsilon_spent = requests[entry.request_id].epsilon_after(entry.contributed_rounds)
    return sorted(taken.values(), key=lambda e: latest[e.request_id], reverse=True)
