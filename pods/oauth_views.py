"""The OAuth2 token endpoint, recording which pod each newly issued pod token belongs to.

django-oauth-toolkit issues device-code tokens without its ``app_authorized`` signal, so the
link (needed to end exactly one pod's tokens when it is revoked) is made here, for both the
device-code grant and refreshes.

It is also where guessing is stopped: a wrong client secret or an unknown refresh token or
device code counts as a failed attempt for that client id and address (``dataspace.lockout``),
and a locked client or address gets a 429 before any secret is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponse
from oauth2_provider.models import AccessToken
from oauth2_provider.views import TokenView

from dataspace import lockout

from .services import pod_token_link

# RFC 6749 §5.2 errors that mean "a secret was wrong": each is one guess. The device flow's
# authorization_pending / slow_down are its normal polling and are not counted.
GUESS_ERRORS = {"invalid_client", "invalid_grant"}


def _client_key(request: HttpRequest) -> str:
    client_id = request.POST.get("client_id", "")
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not client_id and header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        client_id = unquote_plus(decoded.partition(":")[0])  # RFC 6749 §2.3.1
    return f"oauth-client:{client_id}"


class PodAwareTokenView(TokenView):  # type: ignore[misc]
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = _client_key(request)
        if lockout.is_locked(request, key):
            return lockout.lockout_response(request)
        response: HttpResponse = super().post(request, *args, **kwargs)
        if response.status_code in (400, 401):
            try:
                error = json.loads(response.content).get("error")
            except (ValueError, AttributeError):
                error = None
            if error in GUESS_ERRORS:
                lockout.record_failure(request, key)
            return response
        if response.status_code != 200:
            return response
        try:
            raw = json.loads(response.content).get("access_token")
        except ValueError:
            return response
        if isinstance(raw, str):
            checksum = hashlib.sha256(raw.encode("utf-8")).hexdigest()
            token = (
                AccessToken.objects.select_related("application")
                .filter(token_checksum=checksum)
                .first()
            )
            if token is not None:
                device_code = (
                    request.POST.get("device_code")
                    if request.POST.get("grant_type")
                    == "urn:ietf:params:oauth:grant-type:device_code"
                    else None
                )
                pod_token_link(token=token, device_code=device_code)
        return response
