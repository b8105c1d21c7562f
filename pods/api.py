"""The pod's HTTP API (``/api/v1/pod/``): pairing proof, identity, reports, receipts.

Every call but pairing needs a pod token (scope ``pod``) that belongs to an active pod; a
provider token is refused here just as a pod token is refused on provider endpoints.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from django.http import HttpResponse, HttpResponseBase
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from oauth2_provider.models import AccessToken
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import BaseParser, DataAndFiles
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consent import receipts
from consent import selectors as consent_selectors
from dataspace import lockout
from dataspace.errors import DomainError, NotFound
from dataspace.models import DataCategory
from dataspace.parsers import StrictJSONParser
from training import selectors as training_selectors
from training.downloads import control_response, weights_response
from training.rounds.uploads import masked_input_store
from training.rounds.valuation import candidate_blob
from training.serializers import CategoryOutput, ErrorOutput

from . import live_tokens, services
from .models import Pod

ERRORS = {400: ErrorOutput, 401: ErrorOutput, 403: ErrorOutput, 404: ErrorOutput, 409: ErrorOutput}


class PodTokenRequired(BasePermission):
    message = "This endpoint needs the token of an active pod."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if not isinstance(token, AccessToken) or not token.allow_scopes(["pod"]):
            request._insufficient_scope = ["pod"]  # type: ignore[attr-defined]
            return False
        pod = services.pod_of_token(token)
        if pod is None:
            return False
        request.pod = pod  # type: ignore[attr-defined]
        return True


class PodApi(APIView):
    permission_classes = (PodTokenRequired,)

    @staticmethod
    def pod_of(request: Request) -> Pod:
        pod: Pod = request.pod  # type: ignore[attr-defined]
        return pod


class LiveChannelAuthentication(BaseAuthentication):
    """A bearer token that a live control channel of this process authenticated (token, then
    identity-key proof): taken without a token lookup (:mod:`pods.live_tokens`); any other
    token is left to the OAuth authentication that follows."""

    def authenticate(self, request: Request) -> tuple[None, live_tokens.LivePod] | None:
        scheme, _, raw = str(request.META.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not raw:
            return None
        live = live_tokens.live_pod(raw)
        return (None, live) if live is not None else None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class LiveChannelScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = LiveChannelAuthentication
    name = "podBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A pod's access token."}


class LivePodOrTokenRequired(PodTokenRequired):
    """A live channel's pod (whose status the round's own queries check), or a pod token."""

    def has_permission(self, request: Request, view: Any) -> bool:
        live = request.auth
        if isinstance(live, live_tokens.LivePod):
            request.pod = Pod(pk=uuid.UUID(live.pod_id))  # type: ignore[attr-defined]
            return True
        return super().has_permission(request, view)


class RoundTransferApi(PodApi):
    """A round's bulk transfers, per pod per round: a pod with a live channel skips the token
    table; the selectors only ever answer for an active pod's own place in a round."""

    authentication_classes = (LiveChannelAuthentication, OAuth2Authentication)
    permission_classes = (LivePodOrTokenRequired,)


def _body(request: Request) -> dict[str, Any]:
    data = request.data
    if not isinstance(data, dict):
        raise DomainError("The body must be a JSON object.", code="malformed_request")
    return data


def _text(data: dict[str, Any], field: str) -> str:
    """An optional text field: absent is empty, anything but a string is refused."""
    value = data.get(field, "")
    if not isinstance(value, str):
        raise DomainError(
            f"{field} must be text.", code="invalid_value", fields={field: ["text required"]}
        )
    return value


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise DomainError(
            f"{field} must be base64 text.",
            code="invalid_value",
            fields={field: ["base64 required"]},
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DomainError(
            f"{field} is not valid base64.",
            code="invalid_value",
            fields={field: ["invalid base64"]},
        ) from None


class PairingApi(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    parser_classes = (StrictJSONParser,)

    @extend_schema(
        request=inline_serializer(
            "PairingIn",
            {
                "device_code": serializers.CharField(),
                "name": serializers.CharField(),
                "public_key": serializers.CharField(help_text="base64, raw Ed25519 public key"),
                "signature": serializers.CharField(
                    help_text="base64 signature of the pairing message"
                ),
                "agent_version": serializers.CharField(required=False),
            },
        ),
        responses={
            201: inline_serializer("PairingOut", {"fingerprint": serializers.CharField()}),
            **ERRORS,
        },
        summary="Bind a pod's name and identity key to its pending device grant",
    )
    def post(self, request: Request) -> Response:
        data = _body(request)
        device_code = data.get("device_code")
        if not isinstance(device_code, str) or not device_code:
            raise DomainError("device_code is required.", code="invalid_device_code")
        # The device code is the secret here: guesses are counted per code and per address.
        key = f"pod-pairing:{device_code}"
        if lockout.is_locked(request._request, key):
            return lockout.lockout_response(request._request)  # type: ignore[return-value]
        try:
            intent = services.pairing_intent_create(
                device_code=device_code,
                name=_text(data, "name"),
                public_key=_b64(data.get("public_key"), "public_key"),
                signature=_b64(data.get("signature"), "signature"),
                agent_version=_text(data, "agent_version"),
            )
        except DomainError as exc:
            if exc.code == "invalid_device_code":
                lockout.record_failure(request._request, key)
            raise
        return Response({"fingerprint": intent.fingerprint}, status=status.HTTP_201_CREATED)


class MeApi(PodApi):
    @extend_schema(
        responses={
            200: inline_serializer(
                "PodMe",
                {
                    "pod_id": serializers.UUIDField(),
                    "name": serializers.CharField(),
                    "fingerprint": serializers.CharField(),
                    "receipt_keys": serializers.DictField(),
                },
            ),
            **ERRORS,
        },
        summary="Who this pod is, and the service key to pin",
    )
    def get(self, request: Request) -> Response:
        pod = self.pod_of(request)
        services.pod_seen(pod_id=pod.pk)
        return Response(
            {
                "pod_id": str(pod.pk),
                "name": pod.name,
                "fingerprint": pod.fingerprint,
                "status": pod.status,
                "receipt_keys": receipts.public_jwks(),
            }
        )


class ReportApi(PodApi):
    parser_classes = (StrictJSONParser,)

    @extend_schema(
        request=inline_serializer(
            "PodReport",
            {
                "categories": serializers.ListField(
                    child=inline_serializer(
                        "PodReportCategory",
                        {
                            "slug": serializers.CharField(min_length=1, max_length=100),
                            "count": serializers.IntegerField(min_value=0),
                        },
                    ),
                    max_length=100,
                ),
                "agent_version": serializers.CharField(required=False, allow_blank=True),
            },
        ),
        responses={
            200: inline_serializer(
                "PodReportOut", {"categories": serializers.ListField(child=serializers.DictField())}
            ),
            **ERRORS,
        },
        summary="Report the categories this pod holds (names and coarse counts)",
    )
    def post(self, request: Request) -> Response:
        data = _body(request)
        pod = services.pod_report(
            pod=self.pod_of(request),
            categories=data.get("categories"),
            agent_version=_text(data, "agent_version"),
        )
        return Response({"categories": pod.categories_held})


class PodCategoriesApi(PodApi):
    @extend_schema(responses={200: CategoryOutput(many=True), **ERRORS}, summary="The catalog")
    def get(self, request: Request) -> Response:
        return Response(CategoryOutput(DataCategory.objects.all(), many=True).data)


class ReceiptApi(PodApi):
    @extend_schema(
        responses={
            200: inline_serializer(
                "SignedReceipt",
                {"receipt": serializers.DictField(), "signature": serializers.DictField()},
            ),
            **ERRORS,
        },
        summary="The owner's signed consent receipt for a request",
    )
    def get(self, request: Request, request_id: uuid.UUID) -> Response:
        consent = consent_selectors.consent_for_request(
            user_id=self.pod_of(request).owner_id, request_id=request_id
        )
        if consent is None:
            raise NotFound("Your owner has not decided on this request.", code="no_consent")
        return Response(receipts.receipt_signed(consent))


class RoundWeightsApi(RoundTransferApi):
    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            **ERRORS,
        },
        summary="The global weights a round trains from (safetensors, ETag = SHA-256)",
    )
    def get(self, request: Request, round_id: int) -> HttpResponseBase:
        version = training_selectors.round_weights_for(pod=self.pod_of(request), round_id=round_id)
        if version is None:
            raise NotFound("This pod is not in that round.", code="not_in_round")
        return weights_response(request, version)


class RoundControlApi(PodApi):
    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            **ERRORS,
        },
        summary="SCAFFOLD's server control variate for a round (safetensors, ETag = SHA-256)",
    )
    def get(self, request: Request, round_id: int) -> HttpResponseBase:
        version = training_selectors.round_weights_for(pod=self.pod_of(request), round_id=round_id)
        if version is None:
            raise NotFound("This pod is not in that round.", code="not_in_round")
        if not version.control:
            raise NotFound("This round has no control variate.", code="no_control")
        return control_response(request, version)


class RoundCandidateApi(PodApi):
    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            **ERRORS,
        },
        summary="Group value: the last round's model without one group (safetensors, ETag)",
    )
    def get(self, request: Request, round_id: int, index: int) -> HttpResponseBase:
        version = training_selectors.round_weights_for(pod=self.pod_of(request), round_id=round_id)
        if version is None:
            raise NotFound("This pod is not in that round.", code="not_in_round")
        found = candidate_blob(version, index)
        if found is None:
            raise NotFound("No such candidate model.", code="no_candidate")
        blob, sha256 = found
        etag = f'"{sha256}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return HttpResponse(blob, content_type="application/octet-stream", headers={"ETag": etag})


class UnreadStreamParser(BaseParser):
    """Accepts octet-stream bodies without reading them: the view streams them to storage."""

    media_type = "application/octet-stream"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        return DataAndFiles({}, {})


class MaskedInputApi(RoundTransferApi):
    parser_classes = (UnreadStreamParser,)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={
            201: inline_serializer("MaskedInputOut", {"sha256": serializers.CharField()}),
            **ERRORS,
        },
        summary="Upload this pod's masked input (uint32 little-endian, exact length)",
    )
    def put(self, request: Request, round_id: int) -> Response:
        raw = request._request
        try:
            length = int(raw.META.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        participant = masked_input_store(
            pod=self.pod_of(request),
            round_id=round_id,
            stream=raw,  # type: ignore[arg-type]
            length=length,
            sha256=request.headers.get("X-Content-SHA256", ""),
        )
        return Response({"sha256": participant.masked_sha256}, status=status.HTTP_201_CREATED)
