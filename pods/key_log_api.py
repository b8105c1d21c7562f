"""The pod API's key-log endpoints (RFC 9162 style; the pods' side is ``pods.agent.keylog``):
the signed tree head, entries with inclusion proofs, consistency proofs, an owner's entries."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from dataspace.errors import DomainError

from . import key_log
from .api import ERRORS, PodApi

_TREE_HEAD = inline_serializer(
    "KeyLogTreeHead",
    {
        "tree_size": serializers.IntegerField(),
        "timestamp": serializers.IntegerField(help_text="milliseconds since the epoch"),
        "root_hash": serializers.CharField(help_text="base64, RFC 9162 Merkle tree hash"),
        "signature": inline_serializer(
            "KeyLogSignature",
            {
                "alg": serializers.CharField(),
                "kid": serializers.CharField(help_text="the receipt key's id (receipt_keys)"),
                "value": serializers.CharField(help_text="base64 Ed25519 signature"),
            },
        ),
    },
)
_ENTRY = inline_serializer(
    "KeyLogEntry",
    {
        "index": serializers.IntegerField(),
        "pod_id": serializers.UUIDField(),
        "account": serializers.CharField(help_text="base64 account commitment"),
        "public_key": serializers.CharField(help_text="base64 raw Ed25519 public key"),
        "timestamp": serializers.IntegerField(help_text="milliseconds since the epoch"),
    },
)
_PATH = serializers.ListField(child=serializers.CharField(), help_text="base64 hashes")
_PROVED = inline_serializer(
    "KeyLogInclusion", {"head": _TREE_HEAD, "entry": _ENTRY, "inclusion_path": _PATH}
)
# Tree sizes are whole numbers of entries (the schema says so; a size beyond the log is a 409).
_SIZE: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 10**19 - 1}
_TREE_SIZE = OpenApiParameter(
    "tree_size", _SIZE, required=False, description="prove against this size (default: current)"
)


def _query_int(request: Request, name: str, *, required: bool = False) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise DomainError(
                f"{name} is required.", code="invalid_value", fields={name: ["required"]}
            )
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise DomainError(
            f"{name} must be a whole number.",
            code="invalid_value",
            fields={name: ["a whole number"]},
        )
    return int(raw)


class KeyLogHeadApi(PodApi):
    @extend_schema(
        responses={200: _TREE_HEAD, **ERRORS},
        summary="The key log's current signed tree head",
    )
    def get(self, request: Request) -> Response:
        return Response(key_log.key_log_head())


class KeyLogEntryApi(PodApi):
    @extend_schema(
        parameters=[_TREE_SIZE],
        responses={200: _PROVED, **ERRORS},
        summary="A key-log entry by index, with its inclusion proof",
    )
    def get(self, request: Request, index: int) -> Response:
        return Response(
            key_log.key_log_inclusion(index=index, tree_size=_query_int(request, "tree_size"))
        )


class KeyLogPodEntryApi(PodApi):
    @extend_schema(
        parameters=[_TREE_SIZE],
        responses={200: _PROVED, **ERRORS},
        summary="A pod's latest key-log entry, with its inclusion proof",
    )
    def get(self, request: Request, pod_id: uuid.UUID) -> Response:
        return Response(
            key_log.key_log_inclusion(pod_id=pod_id, tree_size=_query_int(request, "tree_size"))
        )


class KeyLogConsistencyApi(PodApi):
    @extend_schema(
        parameters=[
            OpenApiParameter("first", _SIZE, required=True, description="the older tree size"),
            OpenApiParameter(
                "second", _SIZE, required=False, description="the newer size (default: current)"
            ),
        ],
        responses={
            200: inline_serializer(
                "KeyLogConsistency",
                {
                    "first": serializers.IntegerField(),
                    "second": serializers.IntegerField(),
                    "head": _TREE_HEAD,
                    "consistency_path": _PATH,
                },
            ),
            **ERRORS,
        },
        summary="Proof that the key log of size second extends the log of size first",
    )
    def get(self, request: Request) -> Response:
        first = _query_int(request, "first", required=True)
        assert first is not None
        return Response(
            key_log.key_log_consistency(first=first, second=_query_int(request, "second"))
        )


class KeyLogMineApi(PodApi):
    @extend_schema(
        parameters=[_TREE_SIZE],
        responses={
            200: inline_serializer(
                "KeyLogAccount",
                {
                    "account": serializers.UUIDField(help_text="the owner's pseudonym"),
                    "head": _TREE_HEAD,
                    "entries": serializers.ListField(child=serializers.DictField()),
                },
            ),
            **ERRORS,
        },
        summary="Every key-log entry claiming this pod's owner's account, with proofs",
    )
    def get(self, request: Request) -> Response:
        pod = self.pod_of(request)
        return Response(
            key_log.key_log_account(
                user_id=pod.owner_id, tree_size=_query_int(request, "tree_size")
            )
        )
