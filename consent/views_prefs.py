"""The portal's standing rules, inbox, notification settings, unsubscribe and renewal pages."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from dataspace.errors import DomainError

from . import languages, selectors, services
from .forms import NotificationPreferenceForm, RenewForm, RuleForm
from .models import ConsentRule, Notification, NotificationPreference
from .notify import (
    notification_action,
    notification_body,
    notification_title,
    unsubscribe_read,
)
from .renewal import consent_renew
from .rules import rule_text, rules_apply_for_user, rules_of
from .views import AuthedRequest


def _applied_message(request: HttpRequest, user: User) -> None:
    declined = rules_apply_for_user(user)
    if declined:
        messages.info(
            request,
            ngettext(
                "Your rules declined %(count)d open request; see My consents.",
                "Your rules declined %(count)d open requests; see My consents.",
                declined,
            )
            % {"count": declined},
        )


@login_required
@require_http_methods(["GET", "POST"])
def rule_list(request: AuthedRequest) -> HttpResponse:
    form = RuleForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        rule = form.save(commit=False)
        rule.user = request.user
        rule.save()
        messages.success(request, _("Rule saved: %(text)s") % {"text": rule_text(rule)})
        _applied_message(request, request.user)
        return redirect("portal:rules")
    rules = [(rule, rule_text(rule)) for rule in rules_of(request.user)]
    return render(
        request,
        "consent/rules.html",
        {"rules": rules, "form": form},
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: AuthedRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(ConsentRule, pk=rule_id, user=request.user)
    form = RuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        rule = form.save()
        messages.success(request, _("Rule changed: %(text)s") % {"text": rule_text(rule)})
        _applied_message(request, request.user)
        return redirect("portal:rules")
    return render(
        request,
        "consent/rule_edit.html",
        {"rule": rule, "text": rule_text(rule), "form": form},
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def rule_delete(request: AuthedRequest, rule_id: int) -> HttpResponseBase:
    rule = get_object_or_404(ConsentRule, pk=rule_id, user=request.user)
    text = rule_text(rule)
    rule.delete()
    messages.success(
        request,
        _("Rule deleted: %(text)s Decisions it made stay in your history.") % {"text": text},
    )
    return redirect("portal:rules")


@login_required
@require_http_methods(["GET"])
def inbox(request: AuthedRequest) -> HttpResponse:
    notes = list(Notification.objects.filter(user=request.user)[:100])
    items = [
        (n, notification_title(n), notification_body(n), notification_action(n)) for n in notes
    ]
    unread = [n.pk for n in notes if n.read_at is None]
    if unread:
        Notification.objects.filter(pk__in=unread).update(read_at=timezone.now())
    return render(request, "consent/inbox.html", {"items": items, "unread": set(unread)})


@login_required
@require_http_methods(["GET", "POST"])
def notification_settings(request: AuthedRequest) -> HttpResponse:
    preference, _created = NotificationPreference.objects.get_or_create(user=request.user)
    form = NotificationPreferenceForm(request.POST or None, instance=preference)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Your e-mail settings are saved."))
        return redirect("portal:notification_settings")
    return render(request, "consent/notification_settings.html", {"form": form})


@csrf_exempt  # the signed token authenticates; mail clients POST it (RFC 8058 one-click)
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    found = unsubscribe_read(token)
    if found is None:
        raise Http404(_("This unsubscribe link is not valid."))
    user_id, kind = found
    user = get_object_or_404(User, pk=user_id)
    label = Notification.Kind(kind).label
    if request.method == "POST":
        preference, _created = NotificationPreference.objects.get_or_create(user=user)
        setattr(preference, kind, False)
        preference.save(update_fields=[kind])
        return render(request, "consent/unsubscribed.html", {"label": label, "done": True})
    return render(request, "consent/unsubscribed.html", {"label": label, "done": False})


@login_required
@require_http_methods(["GET", "POST"])
def consent_renew_view(request: AuthedRequest, consent_id: uuid.UUID) -> HttpResponse:
    consent = selectors.consent_of(request.user, consent_id)
    notice = services.notice_current(consent.model_request, languages.current_language())
    changed = notice.content_hash != consent.notice_hash
    if request.method == "POST":
        form = RenewForm(request.POST)
        if form.is_valid():
            try:
                consent_renew(
                    user=request.user,
                    consent=consent,
                    seen_notice_hash=form.cleaned_data["notice_hash"],
                    language=notice.language,
                )
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(
                    request,
                    _("You renewed your consent to “%(title)s”.")
                    % {"title": consent.model_request.title},
                )
                return redirect("portal:consents")
        else:
            messages.error(request, _("Your renewal could not be read; nothing was recorded."))
        return redirect("portal:renew", consent_id=consent.pk)
    form = RenewForm(initial={"notice_hash": notice.content_hash})
    context = {
        "consent": consent,
        "notice": notice,
        "changed": changed,
        "form": form,
        "notice_url": reverse("portal:request", args=[consent.model_request_id]),
        "ttl_days": settings.CONSENT_TTL_DAYS,
    }
    return render(request, "consent/renew.html", context)
