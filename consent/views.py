"""The portal: people read notices and grant, refuse or withdraw consent; thin views."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views import i18n
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dataspace.errors import DomainError
from training.models import ModelRequest, TrainingRound

from . import languages, receipts, selectors, services
from .forms import DecisionForm, PauseForm, SignUpForm
from .models import Consent, ConsentRule, Notification
from .rules import rule_of_event, rule_text, rules_of


def _progress_words() -> dict[str, Any]:
    """The live progress line's words in the page's language (read by progress.js)."""
    return {
        "status": {value: str(label).lower() for value, label in ModelRequest.Status.choices},
        "stage": {value: str(label).lower() for value, label in TrainingRound.Status.choices},
        "line": {
            "status": _("Status: %(status)s"),
            "round": _("round %(number)s of %(rounds)s"),
            "round_only": _("round %(number)s"),
            "accuracy": _("accuracy"),
        },
    }


class AuthedRequest(HttpRequest):
    """A request behind ``login_required``: its user is a real account."""

    user: User


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("portal:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        services.data_subject_for(user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        chosen = languages.supported(request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME))
        if chosen:  # picked on the switcher before signing up: keep it as theirs
            languages.language_set(user=user, language=chosen)
            languages.remember_in_session(request, chosen)
        messages.success(request, _("Welcome to Dataspace. Your account is ready."))
        return redirect("portal:home")
    return render(
        request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200
    )


@login_required
@require_GET
def home(request: AuthedRequest) -> HttpResponse:
    user = request.user
    awaiting = selectors.requests_awaiting_decision(user)
    awaiting_ids = {r.pk for r in awaiting}
    others = [r for r in selectors.requests_undecided(user) if r.pk not in awaiting_ids]
    active = [
        c
        for c in selectors.consents_of(user)
        if c.status == Consent.Status.GIVEN and c.expires_at and c.expires_at > timezone.now()
    ]
    context = {
        "awaiting": awaiting,
        "others": others,
        "active": active,
        "paused": selectors.training_paused(user),
        "has_pods": selectors.active_pods(user).exists(),
        "inbox_unread": Notification.objects.filter(user=user, read_at__isnull=True).count(),
    }
    return render(request, "consent/home.html", context)


@login_required
@require_GET
def request_detail(request: AuthedRequest, request_id: uuid.UUID) -> HttpResponse:
    model_request = selectors.open_request(request_id)
    notice = services.notice_current(model_request, languages.current_language())
    consent = Consent.objects.filter(user=request.user, model_request=model_request).first()
    form = DecisionForm(
        user=request.user,
        initial={"notice_hash": notice.content_hash, "language": notice.language},
    )
    context = {
        "model_request": model_request,
        "notice": notice,
        "consent": consent,
        "form": form,
        "progress_words": _progress_words(),
        "can_decide": model_request.is_open
        and (consent is None or consent.status != Consent.Status.GIVEN),
    }
    return render(request, "consent/request_detail.html", context)


@login_required
@require_POST
def request_decide(request: AuthedRequest, request_id: uuid.UUID) -> HttpResponseBase:
    model_request = selectors.open_request(request_id)
    form = DecisionForm(request.POST, user=request.user)
    if not form.is_valid():
        messages.error(request, _("Your decision could not be read; nothing was recorded."))
        return redirect("portal:request", request_id=model_request.pk)
    data = form.cleaned_data
    language = data["language"] or languages.current_language()
    title = {"title": model_request.texts.title_in(languages.current_language())[0]}
    try:
        if data["decision"] == "agree":
            services.consent_grant(
                user=request.user,
                model_request=model_request,
                pod=data["pod"],
                seen_notice_hash=data["notice_hash"],
                language=language,
            )
            messages.success(request, _("You agreed to “%(title)s”.") % title)
        else:
            services.consent_refuse(
                user=request.user,
                model_request=model_request,
                seen_notice_hash=data["notice_hash"],
                language=language,
            )
            messages.success(request, _("You declined “%(title)s”.") % title)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("portal:request", request_id=model_request.pk)
    return redirect("portal:consents")


@login_required
@require_GET
def consent_list(request: AuthedRequest) -> HttpResponse:
    consents = list(selectors.consents_of(request.user))
    rule_ids = set(ConsentRule.objects.filter(user=request.user).values_list("pk", flat=True))
    rows = []
    for consent in consents:
        events = list(consent.events.all())
        # The decision stands as a rule made it: shown with one click to change the rule.
        rule = rule_of_event(events[-1]) if events else None
        if rule is not None:
            rule = {**rule, "exists": rule.get("id") in rule_ids}
        rows.append((consent, rule))
    return render(request, "consent/consent_list.html", {"consents": consents, "rows": rows})


@login_required
@require_POST
def consent_withdraw(request: AuthedRequest, consent_id: uuid.UUID) -> HttpResponseBase:
    consent = selectors.consent_of(request.user, consent_id)
    try:
        services.consent_withdraw(user=request.user, consent=consent)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        title = consent.model_request.texts.title_in(languages.current_language())[0]
        messages.success(
            request,
            _("You withdrew your consent to “%(title)s”. Your pod takes part in no further round.")
            % {"title": title},
        )
    return redirect("portal:consents")


@login_required
@require_GET
@never_cache
def consent_receipt(request: AuthedRequest, consent_id: uuid.UUID) -> HttpResponse:
    consent = selectors.consent_of(request.user, consent_id)
    body = json.dumps(receipts.receipt_signed(consent), indent=2, ensure_ascii=False)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="consent-receipt-{consent.pk}.json"'
    return response


@login_required
@require_GET
@never_cache
def consent_export(request: AuthedRequest) -> HttpResponse:
    """All of my consent history, each consent as a signed receipt, and every round my pods
    took part in (GDPR Art. 15 and 20)."""
    subject = services.data_subject_for(request.user)
    export: dict[str, Any] = {
        "subject": {"pseudonym": str(subject.pseudonym), "username": request.user.get_username()},
        "exported_at": timezone.now().isoformat(),
        "training_paused": subject.training_paused,
        "consents": [receipts.receipt_signed(c) for c in selectors.consents_of(request.user)],
        "rules": [
            {"id": r.pk, "action": r.action, "text": rule_text(r)} for r in rules_of(request.user)
        ],
        "participation": [r.as_dict() for r in selectors.participation_of(request.user)],
    }
    response = HttpResponse(
        json.dumps(export, indent=2, ensure_ascii=False),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = 'attachment; filename="dataspace-consent-history.json"'
    return response


@login_required
@require_GET
def participation(request: AuthedRequest) -> HttpResponse:
    """Which rounds my pods were drawn for, how far they got, and what it cost my privacy."""
    taken = selectors.participation_of(request.user)
    return render(request, "consent/participation.html", {"participation": taken})


@login_required
@require_POST
def training_pause(request: AuthedRequest) -> HttpResponseBase:
    form = PauseForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("That switch position is not valid; nothing changed."))
        return redirect("portal:home")
    paused = form.cleaned_data["paused"]
    services.training_pause_set(user=request.user, paused=paused)
    if paused:
        messages.success(
            request, _("All training is paused. None of your pods takes part in rounds.")
        )
    else:
        messages.success(request, _("Training resumed for the requests you agreed to."))
    return redirect("portal:home")


@require_POST
def language_switch(request: HttpRequest) -> HttpResponseBase:
    """The portal's language switcher: stored on a signed-in person's profile (and so honoured
    at their next login anywhere), and in the language cookie; then back to the page."""
    language = languages.supported(request.POST.get("language"))
    if language is None:
        messages.error(request, _("That language is not available; nothing changed."))
        return redirect("portal:home")
    if request.user.is_authenticated:
        languages.language_set(user=request.user, language=language)
        languages.remember_in_session(request, language)
    return i18n.set_language(request)


@require_GET
def receipt_keys(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(receipts.public_jwks())
    response["Cache-Control"] = "public, max-age=3600"
    return response
