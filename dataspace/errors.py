"""One domain error base with a stable code, and the one JSON shape every API failure takes.

``{"error": {"code": "...", "message": "...", "fields": {...}}}`` — services raise
:class:`DomainError` subclasses; the DRF exception handler below turns those and DRF's own
exceptions into that shape, so clients branch on ``code`` and never parse messages.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler


class DomainError(Exception):
    """A refused action. ``code`` is stable API; ``message`` is one sentence for people."""

    code = "invalid"
    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        fields: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.fields = fields or {}

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}


class NotFound(DomainError):
    code = "not_found"
    status_code = 404


class Conflict(DomainError):
    code = "conflict"
    status_code = 409


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


_DRF_CODES: dict[type[Exception], str] = {
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "throttled",
    drf_exceptions.ParseError: "malformed_request",
    drf_exceptions.ValidationError: "invalid",
}


def _first_message(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        return _first_message(next(iter(detail.values())))
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF hook: every API error leaves as ``{"error": {code, message, fields}}``."""
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_default_handler(exc, context)
    if response is None or not isinstance(exc, drf_exceptions.APIException):
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    message = _first_message(exc.detail)
    fields: dict[str, Any] = {}
    request = context.get("request")
    oauth2_error = getattr(request, "oauth2_error", None) or {}
    if (
        isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed)
        and oauth2_error.get("error") == "invalid_token"
    ):
        code = "invalid_token"
        message = str(oauth2_error.get("error_description") or "The access token is invalid.")
    required = getattr(request, "_insufficient_scope", None)
    if isinstance(exc, drf_exceptions.PermissionDenied) and required is not None:
        # RFC 6750 section 3.1: tell the client which scope it lacks.
        code = "insufficient_scope"
        scope = " ".join(required)
        response["WWW-Authenticate"] = (
            f'Bearer realm="api", error="insufficient_scope", scope="{scope}"'
        )
        message = f"This token lacks the scope this endpoint needs ({scope})."
    if isinstance(exc, drf_exceptions.ValidationError) and isinstance(exc.detail, dict):
        fields = {
            k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in exc.detail.items()
        }
        message = "Some fields are invalid."
    response.data = error_body(code, message, fields)
    return response
