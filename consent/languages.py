"""A person's language: their own setting wins, else the switcher's cookie, else Accept-Language.

Django's ``LocaleMiddleware`` reads the cookie and ``Accept-Language``; the setting stored on the
person's :class:`~consent.models.DataSubject` is copied into the session at login (so it is
honoured on every device they sign in on) and applied by :class:`PersonLanguageMiddleware`
after authentication, without a database query per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.utils import translation

from .models import DataSubject

SESSION_KEY = "dataspace_language"


def supported(language: str | None) -> str | None:
    """``language`` if the portal speaks it, else ``None``."""
    codes = {code for code, _ in settings.LANGUAGES}
    return language if language in codes else None


def current_language() -> str:
    """The active language if the portal speaks it, else the default."""
    return supported(translation.get_language()) or settings.LANGUAGE_CODE


def language_set(*, user: AbstractBaseUser, language: str) -> DataSubject:
    """Store a person's language setting; ``""`` means "follow my browser"."""
    if language and supported(language) is None:
        raise ValueError(f"unsupported language {language!r}")
    subject, _ = DataSubject.objects.get_or_create(user_id=user.pk)
    if subject.language != language:
        subject.language = language
        subject.save(update_fields=["language"])
    return subject


def remember_in_session(request: HttpRequest, language: str) -> None:
    if supported(language):
        request.session[SESSION_KEY] = language
    else:
        request.session.pop(SESSION_KEY, None)


def on_login(
    sender: Any, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: Any
) -> None:
    """``user_logged_in`` receiver: honour the person's own language from this login on."""
    if request is None or not hasattr(request, "session"):
        return
    language = (
        DataSubject.objects.filter(user_id=user.pk).values_list("language", flat=True).first()
    )
    remember_in_session(request, language or "")


class PersonLanguageMiddleware:
    """Activate the signed-in person's own language (after ``AuthenticationMiddleware``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        language = supported(session.get(SESSION_KEY)) if session is not None else None
        if language:  # only ever set at login or by the switcher; a logout flushes it
            translation.activate(language)
            request.LANGUAGE_CODE = language
        return self.get_response(request)
