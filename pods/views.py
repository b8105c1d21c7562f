"""Portal pages for pods: pair (approve a device code), list, rename, revoke."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dataspace import lockout
from dataspace.errors import DomainError

from . import services
from .forms import PairCodeForm, RenameForm
from .key_log import key_log_rows_of
from .models import KeyLogEntry, Pod


class AuthedRequest(HttpRequest):
    user: User


def _my_pod(request: AuthedRequest, pod_id: uuid.UUID) -> Pod:
    pod = Pod.objects.filter(pk=pod_id, owner=request.user).first()
    if pod is None:
        raise Http404("No such pod.")
    return pod


def _pairing_key(request: AuthedRequest) -> str:
    return f"pod-pair-code:{request.user.pk}"


def _count_guess(request: AuthedRequest, exc: DomainError) -> None:
    """A user code that matches no waiting pod is a guess: approving someone else's code
    would bind their pod to this account. Counted per account and address."""
    if exc.code == "unknown_code":
        lockout.record_failure(request, _pairing_key(request))


@login_required
@require_GET
def pod_list(request: AuthedRequest) -> HttpResponse:
    pods = list(Pod.objects.filter(owner=request.user).order_by("status", "name"))
    # Every key the key log holds under this person's account, so they can spot one they did
    # not pair (``dataspace-pod audit`` checks the same from a device).
    entries: dict[Any, list[KeyLogEntry]] = {}
    for entry in key_log_rows_of(request.user).order_by("index"):
        entries.setdefault(entry.pod_id, []).append(entry)
    for pod in pods:
        pod.log_entries = entries.get(pod.pk, [])  # type: ignore[attr-defined]
    return render(request, "pods/pod_list.html", {"pods": pods})


@login_required
@require_http_methods(["GET", "POST"])
def pair(request: AuthedRequest) -> HttpResponse:
    """Step 1: the person types (or scans) the code their pod shows."""
    code = request.POST.get("code") or request.GET.get("code")
    form = PairCodeForm({"code": code} if code else None)
    if code and form.is_valid():
        if lockout.is_locked(request, _pairing_key(request)):
            return lockout.lockout_response(request)
        try:
            intent = services.pairing_pending(user_code=form.cleaned_data["code"])
        except DomainError as exc:
            _count_guess(request, exc)
            form.add_error("code", exc.message)
        else:
            return render(request, "pods/pair_confirm.html", {"intent": intent})
    status = 400 if form.errors else 200
    return render(request, "pods/pair.html", {"form": form}, status=status)


@login_required
@require_POST
def pair_decide(request: AuthedRequest) -> HttpResponseBase:
    """Step 2: approve or deny the pod shown with its name and key fingerprint."""
    form = PairCodeForm(request.POST)
    if not form.is_valid():  # e.g. a NUL character, which PostgreSQL would refuse with a 500
        messages.error(request, _("That is not a pairing code."))
        return redirect("pods:pair")
    code = form.cleaned_data["code"]
    if lockout.is_locked(request, _pairing_key(request)):
        return lockout.lockout_response(request)
    try:
        if request.POST.get("decision") == "approve":
            pod = services.pairing_approve(user=request.user, user_code=code)
            messages.success(
                request,
                _("“%(name)s” is paired. It finishes setting up by itself.") % {"name": pod.name},
            )
        else:
            services.pairing_deny(user=request.user, user_code=code)
            messages.success(request, _("Pairing denied. That device got no access."))
    except DomainError as exc:
        _count_guess(request, exc)
        messages.error(request, exc.message)
        return redirect("pods:pair")
    return redirect("pods:list")


@login_required
@require_POST
def rename(request: AuthedRequest, pod_id: uuid.UUID) -> HttpResponseBase:
    pod = _my_pod(request, pod_id)
    form = RenameForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Please give a name of 1 to 100 characters."))
        return redirect("pods:list")
    try:
        services.pod_rename(user=request.user, pod=pod, name=form.cleaned_data["name"])
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, _("Renamed to “%(name)s”.") % {"name": form.cleaned_data["name"].strip()}
        )
    return redirect("pods:list")


@login_required
@require_POST
def revoke(request: AuthedRequest, pod_id: uuid.UUID) -> HttpResponseBase:
    pod = _my_pod(request, pod_id)
    try:
        services.pod_revoke(user=request.user, pod=pod)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("“%(name)s” is revoked: its access ended and it is disconnected.")
            % {"name": pod.name},
        )
    return redirect("pods:list")
