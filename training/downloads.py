"""Serving model weights (safetensors) over HTTP: ETag = SHA-256, conditional GET, big chunks.

A version's weights never change once stored (the ETag is their hash), so each web process
keeps the recent ones in memory: a round's cohort downloads one object, sent in one piece,
instead of every pod opening and reading the file. The same copy goes as a binary frame on a
pod's control channel with the task that names it (:func:`stored_weights`, ``pods.consumers``):
no HTTP request per pod and round.
"""

from __future__ import annotations

import io
from typing import Any

from django.core.files import File
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpResponse, HttpResponseBase
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from .models import ModelVersion
from .shared.kept import Kept

# Django's FileResponse reads 4 KiB at a time; under ASGI each block is one message to send.
BLOCK = 1 << 18
# Weights kept in memory per process (bytes, all versions together); bigger ones stream.
CACHE_BYTES = 64 << 20

_cache: Kept[tuple[str, str], bytes] = Kept(64, weight=CACHE_BYTES, weigh=len)


def _cached(field: FieldFile, sha256: str) -> bytes | None:
    """A stored file (a version's weights or control variate) from this process's memory,
    read once from storage; None when it is too big to keep (it is then streamed)."""
    key = (field.name or "", sha256)
    blob = _cache.get(key)
    if blob is not None:
        return blob
    if field.size > CACHE_BYTES // 4:
        return None
    with _open(field) as handle:
        read: bytes = handle.read()
    return _cache.put(key, read)


def cached_weights(sha256: str) -> bytes | None:
    """Weights (or any stored file) this process holds in memory, by their SHA-256: no I/O, so
    an event loop may call it. Content-addressed: whatever is kept under that hash is those
    bytes."""
    return _cache.find(lambda key: key[1] == sha256)


def stored_weights(sha256: str) -> bytes | None:
    """A model version's weights by their SHA-256, read once per process and kept in memory
    (:func:`cached_weights` next time); None when no version has them, or they are too big to
    keep (a pod then downloads them)."""
    blob = cached_weights(sha256)
    if blob is not None:
        return blob
    version = ModelVersion.objects.filter(sha256=sha256).only("weights", "sha256").first()
    if version is None or not version.weights:
        return None
    return _cached(version.weights, sha256)


def _open(field: FieldFile) -> File[bytes]:
    """A handle of this request's own on a stored file. Not ``field.open()``: a version (and its
    field) is shared by the process's request threads, and ``field.open()`` reuses the one handle
    the field holds, which another thread may be reading or closing."""
    return field.storage.open(field.name or "", "rb")


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
    response: HttpResponseBase
    if request.headers.get("If-None-Match") == etag:
        return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    blob = _cached(field, sha256)
    if blob is None:
        response = FileResponse(
            _open(field), content_type="application/octet-stream", **file_options
        )
        response.block_size = BLOCK
    elif not file_options:
        # In memory: a plain response, sent in one piece (a streaming one costs a thread
        # hop per response under ASGI).
        response = HttpResponse(blob, content_type="application/octet-stream")
    else:
        response = FileResponse(
            io.BytesIO(blob), content_type="application/octet-stream", **file_options
        )
        response.block_size = max(len(blob), 1)  # one piece
    response["ETag"] = etag
    return response
