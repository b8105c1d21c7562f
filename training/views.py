"""Portal pages of the training app: the model card, for people whose pods took part."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from consent.selectors import participation_of

from .card import card_signed
from .card_page import card_context
from .models import ModelRequest


@login_required
@require_GET
def model_card(request: HttpRequest, request_id: uuid.UUID) -> HttpResponse:
    """The signed model card of a request one of the person's pods fed (a round's sum included
    its masked input); a 404 for anyone else, so ids leak nothing."""
    taken = next(
        (t for t in participation_of(request.user) if t.request_id == request_id),  # type: ignore[arg-type]
        None,
    )
    if taken is None or not taken.contributed_rounds:
        raise Http404("No model card for you here.")
    model_request = ModelRequest.objects.select_related("provider", "data_category").get(
        pk=request_id
    )
    context = card_context(card_signed(model_request))
    return render(request, "training/model_card_portal.html", context)
