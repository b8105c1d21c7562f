"""The provider API (``/api/v1/``): thin views, querysets scoped to the calling provider.

Authentication is OAuth2 client credentials; each view names the scope it needs per method.
Another provider's request is a 404, never a 403, so ids leak nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from oauth2_provider.models import AccessToken
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dataspace.errors import DomainError
from dataspace.models import DataCategory
from training.modelspec import safejson

from . import selectors, services
from .card import card_signed
from .card_page import card_html
from .downloads import weights_response
from .models import ModelRequest, Provider
from .serializers import CategoryOutput, ErrorOutput, ModelRequestOutput, RoundOutput

ERRORS = {
    400: ErrorOutput,
    401: ErrorOutput,
    403: ErrorOutput,
    404: ErrorOutput,
    409: ErrorOutput,
    413: ErrorOutput,
}


class ProviderTokenRequired(BasePermission):
    """The bearer token belongs to a provider's client and carries the view's scope."""

    message = "This token does not grant access to this endpoint."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if not isinstance(token, AccessToken) or token.application is None:
            return False
        link = getattr(token.application, "provider_client", None)
        required = view.required_scopes_for(request.method)
        if link is None or not token.allow_scopes(required):
            request._insufficient_scope = required  # type: ignore[attr-defined]
            return False
        request.provider = link.provider  # type: ignore[attr-defined]
        return True


class ProviderApi(APIView):
    permission_classes = (ProviderTokenRequired,)
    scopes: ClassVar[dict[str, list[str]]] = {}

    def required_scopes_for(self, method: str | None) -> list[str]:
        return self.scopes.get(method or "", ["requests:read"])

    @staticmethod
    def provider_of(request: Request) -> Provider:
        provider: Provider = request.provider  # type: ignore[attr-defined]
        return provider

    def scoped_requests(self, request: Request) -> QuerySet[ModelRequest]:
        return selectors.model_requests_of(self.provider_of(request))

    def get_model_request(self, request: Request, request_id: Any) -> ModelRequest:
        return get_object_or_404(self.scoped_requests(request), pk=request_id)


class CategoryListApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"GET": ["requests:read"]}

    @extend_schema(responses={200: CategoryOutput(many=True), **ERRORS}, summary="The data catalog")
    def get(self, request: Request) -> Response:
        return Response(CategoryOutput(DataCategory.objects.all(), many=True).data)


SUBMIT_SCHEMA = {
    "multipart/form-data": {
        "type": "object",
        "properties": {
            "spec": {"type": "string", "description": "The model spec (JSON text or a JSON file)."},
            "weights": {"type": "string", "format": "binary", "description": "safetensors"},
        },
        "required": ["spec", "weights"],
    }
}


def _read_spec(value: Any) -> Any:
    if isinstance(value, UploadedFile):
        if value.size is not None and value.size > settings.MODEL_MAX_SPEC_BYTES:
            raise DomainError("The spec is too large.", code="spec_too_large", status_code=413)
        value = value.read()
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DomainError("The spec is not UTF-8 text.", code="malformed_spec") from None
    if not isinstance(value, str) or not value.strip():
        raise DomainError(
            "Send the spec as a JSON text field or file named 'spec'.",
            code="missing_spec",
            fields={"spec": ["required"]},
        )
    if len(value) > settings.MODEL_MAX_SPEC_BYTES:
        raise DomainError("The spec is too large.", code="spec_too_large", status_code=413)
    try:
        return safejson.loads(value)
    except safejson.UnsafeJson as exc:
        code = "malformed_spec" if exc.code == "json_malformed" else exc.code
        raise DomainError(
            f"The spec is refused: {exc.message}", code=code, fields={"spec": [exc.message]}
        ) from None


def _read_weights(value: Any) -> bytes:
    if not isinstance(value, UploadedFile):
        raise DomainError(
            "Send the weights as a safetensors file named 'weights'.",
            code="missing_weights",
            fields={"weights": ["required"]},
        )
    if value.size is not None and value.size > settings.MODEL_MAX_WEIGHTS_BYTES:
        raise DomainError(
            f"The weights file is larger than {settings.MODEL_MAX_WEIGHTS_BYTES} bytes.",
            code="weights_too_large",
            status_code=413,
        )
    return bytes(value.read())


class ModelRequestListApi(ProviderApi):
    parser_classes = (MultiPartParser,)
    scopes: ClassVar[dict[str, list[str]]] = {
        "GET": ["requests:read"],
        "POST": ["requests:write"],
    }

    @extend_schema(
        responses={200: ModelRequestOutput(many=True), **ERRORS}, summary="Your requests"
    )
    def get(self, request: Request) -> Response:
        return Response(ModelRequestOutput(self.scoped_requests(request), many=True).data)

    @extend_schema(
        request=SUBMIT_SCHEMA,
        responses={201: ModelRequestOutput, **ERRORS},
        summary="Submit a model request (spec + safetensors weights)",
    )
    def post(self, request: Request) -> Response:
        spec = _read_spec(request.data.get("spec"))
        weights = _read_weights(request.FILES.get("weights"))
        model_request = services.model_request_create(
            provider=self.provider_of(request), spec=spec, weights=weights
        )
        return Response(ModelRequestOutput(model_request).data, status=status.HTTP_201_CREATED)


class ModelRequestDetailApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"GET": ["requests:read"]}

    @extend_schema(responses={200: ModelRequestOutput, **ERRORS}, summary="One request's status")
    def get(self, request: Request, request_id: str) -> Response:
        return Response(ModelRequestOutput(self.get_model_request(request, request_id)).data)


class ModelRequestCancelApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"POST": ["requests:write"]}

    @extend_schema(request=None, responses={200: ModelRequestOutput, **ERRORS}, summary="Cancel")
    def post(self, request: Request, request_id: str) -> Response:
        model_request = self.get_model_request(request, request_id)
        cancelled = services.model_request_cancel(model_request=model_request)
        return Response(ModelRequestOutput(cancelled).data)


class ModelRequestRoundsApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"GET": ["requests:read"]}

    @extend_schema(responses={200: RoundOutput(many=True), **ERRORS}, summary="Rounds so far")
    def get(self, request: Request, request_id: str) -> Response:
        model_request = self.get_model_request(request, request_id)
        rounds = model_request.rounds_run.order_by("number", "attempt")
        return Response(RoundOutput(rounds, many=True).data)


class ModelRequestModelApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"GET": ["models:read"]}

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The latest global weights (safetensors)"
            ),
            **ERRORS,
        },
        summary="Download the latest global model",
    )
    def get(self, request: Request, request_id: str) -> HttpResponseBase:
        model_request = self.get_model_request(request, request_id)
        version = selectors.model_version_latest(model_request)
        response = weights_response(
            request,
            version,
            as_attachment=True,
            filename=f"model-{model_request.pk}-round-{version.round_number}.safetensors",
        )
        response["X-Dataspace-Round"] = str(version.round_number)
        return response


class ModelRequestModelCardApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"GET": ["models:read"]}

    @extend_schema(
        responses={
            200: inline_serializer(
                "SignedModelCard",
                {
                    "card": serializers.DictField(),
                    "signature": serializers.DictField(child=serializers.CharField()),
                },
            ),
            **ERRORS,
        },
        summary="The signed model card (JSON; verify with the receipt keys' JWK Set)",
    )
    def get(self, request: Request, request_id: str) -> Response:
        model_request = self.get_model_request(request, request_id)
        return Response(card_signed(model_request))


class ModelRequestModelCardPageApi(ProviderApi):
    scopes: ClassVar[dict[str, list[str]]] = {"GET": ["models:read"]}

    @extend_schema(
        responses={(200, "text/html"): OpenApiResponse(OpenApiTypes.STR), **ERRORS},
        summary="The signed model card as a readable page with its plots",
    )
    def get(self, request: Request, request_id: str) -> HttpResponse:
        model_request = self.get_model_request(request, request_id)
        return HttpResponse(card_html(card_signed(model_request)), content_type="text/html")
