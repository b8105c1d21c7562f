"""Brute-force protection for every password- or secret-guessing entry point, through django-axes.

django-axes counts failed portal and admin logins by itself (its authentication backend and
middleware). The other entry points where a secret can be guessed are not Django logins, so
they report their failures here under a namespaced key, and axes applies the same rule: after
``AXES_FAILURE_LIMIT`` failures for one key (an account, an OAuth client id, a pairing account)
*or* from one client address, further attempts are refused until ``AXES_COOLOFF_TIME`` has
passed since the last failure, or an operator resets them (``manage.py axes_reset``).

- ``/o/token/``: a wrong client secret (``invalid_client``) or an unknown refresh token or
  device code (``invalid_grant``), keyed by client id;
- ``/api/v1/pod/pairing/``: an unknown device code or a bad key proof, keyed by device code;
- the pairing page (``/pods/pair/``): a user code that matches no waiting pod, keyed by the
  signed-in account — guessing another person's code would bind their pod to your account.

Attempts are stored in the database (axes' ``AccessAttempt``), so every process and worker
sees the same counts, and none holds a secret: the key is an id, never a password or token.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone


def _credentials(key: str) -> dict[str, str]:
    # Bounded, so a huge submitted value is not stored whole.
    return {"username": key[:200]}


def is_locked(request: HttpRequest, key: str) -> bool:
    """Whether this key, or the request's client address, is locked out now."""
    return bool(AxesProxyHandler.is_locked(request, _credentials(key)))


def record_failure(request: HttpRequest, key: str) -> None:
    """Count one failed guess for ``key`` and the client address (what a failed login does)."""
    user_login_failed.send(sender=__name__, credentials=_credentials(key), request=request)


def _retry_after_seconds() -> int:
    cool_off = get_cool_off()
    return int(cool_off.total_seconds()) if cool_off else 0


def unlock_message() -> str:
    """How a lockout ends, in plain words."""
    seconds = _retry_after_seconds()
    if not seconds:
        return "An operator has to unlock it."
    minutes = max(1, round(seconds / 60))
    return (
        f"It unlocks by itself {minutes} minute{'s' if minutes != 1 else ''} after the last "
        "failed attempt; an operator can unlock it sooner."
    )


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a 429 that says plainly what happened and how it ends.

    API and OAuth clients get the JSON error shape (and ``Retry-After``, RFC 9110 §10.2.3);
    people get a page.
    """
    seconds = _retry_after_seconds()
    message = f"Too many failed attempts: access is locked. {unlock_message()}"
    if request.path.startswith(("/o/", "/api/")):
        body: dict[str, Any] = {"error": {"code": "locked_out", "message": message, "fields": {}}}
        if request.path.startswith("/o/"):
            # RFC 6749 §5.2 clients read "error" as a string.
            body = {"error": "locked_out", "error_description": message}
        response: HttpResponse = JsonResponse(body, status=429)
    else:
        until = timezone.now() + get_cool_off() if seconds else None
        response = render(
            request,
            "registration/locked_out.html",
            {"unlock_message": unlock_message(), "until": until},
            status=429,
        )
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
