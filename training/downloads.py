"""Serving model weights (safetensors) over HTTP: ETag = SHA-256, conditional GET, big chunks.

A version's weights never change once stored (the ETag is their hash), so each web process
keeps the recent ones in memory: a round's cohort downloads one object, sent in one piece,
instead of every pod opening and reading the file.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

from django.http import FileResponse, HttpResponseBase
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from .models import ModelVersion

# Django's FileResponse reads 4 KiB at a time; under ASGI each block is one message to send.
BLOCK = 1 << 18
# Weights kept in memory per process (bytes, all versions together); bigger ones stream.
CACHE_BYTES = 64 << 20

_cache: OrderedDict[tuple[int, str], bytes] = OrderedDict()
_lock = threading.Lock()


def _cached_weights(version: ModelVersion) -> bytes | None:
    """The version's weights from this process's memory, read once from storage; None when
    they are too big to keep (they are then streamed from storage)."""
    key = (version.pk, version.sha256)
    with _lock:
        blob = _cache.get(key)
        if blob is not None:
            _cache.move_to_end(key)
            return blob
    if version.weights.size > CACHE_BYTES // 4:
        return None
    with version.weights.open("rb") as handle:
        read: bytes = handle.read()
    with _lock:
        _cache[key] = read
        while sum(len(b) for b in _cache.values()) > CACHE_BYTES:
            _cache.popitem(last=False)
    return read


def weights_response(
    request: Request, version: ModelVersion, **file_options: Any
) -> HttpResponseBase:
    """The version's weights, or 304 when the client already holds them (If-None-Match)."""
    etag = f'"{version.sha256}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    blob = _cached_weights(version)
    if blob is None:
        response = FileResponse(
            version.weights.open("rb"), content_type="application/octet-stream", **file_options
        )
        response.block_size = BLOCK
    else:
        response = FileResponse(
            io.BytesIO(blob), content_type="application/octet-stream", **file_options
        )
        response.block_size = max(len(blob), 1)  # one piece
    response["ETag"] = etag
    return response
