"""The OAuth2 token endpoint, recording which pod each newly issued pod token belongs to.

django-oauth-toolkit issues device-code tokens without its ``app_authorized`` signal, so the
link (needed to end exactly one pod's tokens when it is revoked) is made here, for both the
device-code grant and refreshes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from oauth2_provider.models import AccessToken
from oauth2_provider.views import TokenView

from .services import pod_token_link


class PodAwareTokenView(TokenView):  # type: ignore[misc]
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().post(request, *args, **kwargs)
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
