"""Serving model weights (safetensors) over HTTP: ETag = SHA-256, conditional GET, big chunks."""

from __future__ import annotations

from typing import Any

from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpResponseBase
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from .models import ModelVersion

# Django's FileResponse reads 4 KiB at a time; under ASGI each block is one message to send.
BLOCK = 1 << 18


def weights_response(
    request: Request, version: ModelVersion, **file_options: Any
) -> HttpResponseBase:
    """The version's weights, or 304 when the client already holds them (If-None-Match)."""
    return _file_response(request, version.weights, version.sha256, **file_options)


def control_response(request: Request, version: ModelVersion) -> HttpResponseBase:
    """SCAFFOLD's server control variate c a version was produced with (safetensors)."""
    return _file_response(request, version.control, version.control_sha256)


def _file_response(
    request: Request, field: FieldFile, sha256: str, **file_options: Any
) -> HttpResponseBase:
    etag = f'"{sha256}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    response = FileResponse(
        field.open("rb"), content_type="application/octet-stream", **file_options
    )
    response.block_size = BLOCK
    response["ETag"] = etag
    return response
