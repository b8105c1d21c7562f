"""Who may take part: one online pod per person whose consent lets it train now."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Exists, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from consent.selectors import usable_consents
from pods.models import KeyLogEntry, Pod
from pods.presence import online_pods
from training.models import ModelRequest, RoundParticipant


def enough_consents(model_request: ModelRequest, now: datetime) -> bool:
    """Whether enough people's consents are usable for a cohort at all: one COUNT, so the
    clock's tick over a recruiting request with too few consents reads no pod."""
    return usable_consents(model_request, now).count() >= model_request.min_participants


def recruiting_with_enough_consents(now: datetime) -> QuerySet[ModelRequest]:
    """The recruiting requests with enough usable consents for a cohort (:func:`enough_consents`
    of each): one query for the clock's tick, however many requests are recruiting."""
    usable = (
        usable_consents(OuterRef("pk"), now)
        .order_by()
        .values("model_request")
        .annotate(usable=Count("pk"))
        .values("usable")
    )
    return (
        ModelRequest.objects.filter(status=ModelRequest.Status.RECRUITING)
        .annotate(usable=Coalesce(Subquery(usable), 0))
        .filter(usable__gte=F("min_participants"))
    )


def eligible_pods(model_request: ModelRequest, now: datetime) -> list[Pod]:
    """One online pod per person whose consent is given, unexpired and not paused; real pods
    only, unless there are too few of them and enough simulated ones (demos, load tests) —
    never the two kinds together, so an operator's pods cannot surround a real person's."""
    chosen = _one_per_person(model_request, now)
    real = [p for p in chosen if not p.simulated]
    if len(real) >= model_request.min_participants or len(real) == len(chosen):
        return real
    simulated = [p for p in chosen if p.simulated]
    return simulated if len(simulated) >= model_request.min_participants else real


def _one_per_person(model_request: ModelRequest, now: datetime) -> list[Pod]:
    consents = usable_consents(model_request, now)
    chosen: dict[int, Pod] = {}
    pods = (
        online_pods()
        .filter(owner__in=consents.values("user"))
        # Neighbours accept only identity keys the key log vouches for (pods.agent.keylog).
        .filter(Exists(KeyLogEntry.objects.filter(pod_id=OuterRef("pk"))))
        .order_by("owner_id", "created_at")
    )
    bound = dict(consents.exclude(pod=None).values_list("user_id", "pod_id"))
    slug = model_request.data_category.slug
    for pod in pods:
        if bound.get(pod.owner_id) not in (None, pod.pk):
            continue  # the person chose another pod for this request
        if pod.owner_id not in chosen and (bound.get(pod.owner_id) == pod.pk or pod.holds(slug)):
            chosen[pod.owner_id] = pod
    return list(chosen.values())


def may_take_part(
    model_request: ModelRequest, participant: RoundParticipant, now: datetime
) -> bool:
    """Whether one participant's pod is active and its owner's consent still covers the round."""
    return (
        participant.pod.is_active
        and usable_consents(model_request, now).filter(user_id=participant.user_id).exists()
    )


def still_consenting(
    model_request: ModelRequest, participants: list[RoundParticipant], now: datetime
) -> set[int]:
    """The participants' owners whose consent still covers the request (one query for the
    whole cohort)."""
    users = {p.user_id for p in participants}
    return set(
        usable_consents(model_request, now)
        .filter(user_id__in=users)
        .values_list("user_id", flat=True)
    )
