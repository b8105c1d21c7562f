"""Pod services: pairing (RFC 8628 device grant + identity-key proof), revoking, reporting."""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from oauth2_provider.models import (
    AccessToken,
    Application,
    DeviceGrant,
    RefreshToken,
    set_token_value,
)

from dataspace import delivery
from dataspace.errors import Conflict, DomainError, NotFound
from pods.agent.protocol import CloseCode, pairing_message

from .key_log import key_log_append
from .models import PairingIntent, Pod, PodToken, key_fingerprint

logger = logging.getLogger(__name__)


def pod_application() -> Application:
    """The public OAuth2 client pods pair with (created by a migration; recreated if flushed)."""
    application, _created = Application.objects.get_or_create(
        client_id=settings.POD_CLIENT_ID,
        defaults={
            "name": "Dataspace pod",
            "client_type": Application.CLIENT_PUBLIC,
            "authorization_grant_type": Application.GRANT_DEVICE_CODE,
            "client_secret": "",
        },
    )
    return application


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@transaction.atomic
def pairing_intent_create(
    *, device_code: str, name: str, public_key: bytes, signature: bytes, agent_version: str = ""
) -> PairingIntent:
    """A pod asks to be paired: bind its name and identity key to its pending device grant."""
    name = name.strip()
    if not name or len(name) > 100:
        raise DomainError(_("A pod name is 1 to 100 characters."), code="invalid_name")
    if len(public_key) != 32 or not verify_signature(
        public_key, signature, pairing_message(device_code, public_key)
    ):
        raise DomainError("The identity-key proof does not verify.", code="invalid_proof")
    grant = (
        DeviceGrant.objects.select_for_update()
        .filter(device_code=device_code, client_id=settings.POD_CLIENT_ID)
        .first()
    )
    if grant is None or grant.is_expired() or grant.status != grant.AUTHORIZATION_PENDING:
        raise DomainError("No pending pairing for this device code.", code="invalid_device_code")
    if PairingIntent.objects.filter(device_grant=grant).exists():
        raise Conflict("This device code is already bound to a pod.", code="already_bound")
    fingerprint = key_fingerprint(public_key)
    if Pod.objects.filter(fingerprint=fingerprint).exists():
        raise Conflict("This identity key is already paired.", code="key_in_use")
    return PairingIntent.objects.create(
        device_grant=grant,
        name=name,
        public_key=public_key,
        fingerprint=fingerprint,
        agent_version=agent_version[:50],
    )


def pairing_pending(*, user_code: str) -> PairingIntent:
    """The pod waiting for approval under this user code (as typed by a person)."""
    code = user_code.strip().upper().replace(" ", "").replace("-", "")
    intent = (
        PairingIntent.objects.select_related("device_grant")
        .filter(device_grant__user_code=code, device_grant__client_id=settings.POD_CLIENT_ID)
        .first()
    )
    if intent is None:
        raise NotFound(
            _("No pod is waiting with this code. Check the code on your device."),
            code="unknown_code",
        )
    grant = intent.device_grant
    if grant.is_expired():
        raise DomainError(
            _("This code has expired. Start pairing again on your device."), code="code_expired"
        )
    if grant.status != grant.AUTHORIZATION_PENDING:
        raise Conflict(_("This code was already used."), code="code_used")
    return intent


@transaction.atomic
def pairing_approve(*, user: User, user_code: str) -> Pod:
    """The person approves: the device grant is authorized for them and the pod is registered.

    Its identity key goes into the key log in the same transaction: no pod without an entry.
    """
    intent = pairing_pending(user_code=user_code)
    grant = DeviceGrant.objects.select_for_update().get(pk=intent.device_grant_id)
    if grant.status != grant.AUTHORIZATION_PENDING:
        raise Conflict(_("This code was already used."), code="code_used")
    pod = Pod.objects.create(
        owner=user,
        name=intent.name,
        public_key=bytes(intent.public_key),
        fingerprint=intent.fingerprint,
        agent_version=intent.agent_version,
    )
    key_log_append(pod=pod)
    intent.pod = pod
    intent.save(update_fields=["pod"])
    grant.user = user
    grant.status = grant.AUTHORIZED
    grant.save(update_fields=["user", "status"])
    return pod


@transaction.atomic
def pairing_deny(*, user: User, user_code: str) -> None:
    intent = pairing_pending(user_code=user_code)
    grant = DeviceGrant.objects.select_for_update().get(pk=intent.device_grant_id)
    grant.user = user
    grant.status = grant.DENIED
    grant.save(update_fields=["user", "status"])


def pod_token_link(*, token: AccessToken, device_code: str | None) -> PodToken | None:
    """Record which pod a freshly issued token belongs to (device-code or refresh grant)."""
    if token.application is None or token.application.client_id != settings.POD_CLIENT_ID:
        return None
    pod: Pod | None = None
    if device_code:
        intent = PairingIntent.objects.filter(device_grant__device_code=device_code).first()
        pod = intent.pod if intent else None
    elif token.source_refresh_token_id is not None:
        previous = PodToken.objects.filter(refresh_token_id=token.source_refresh_token_id).first()
        pod = previous.pod if previous else None
    if pod is None or not pod.is_active:
        return None
    refresh = RefreshToken.objects.filter(access_token=token).first()
    return PodToken.objects.create(pod=pod, access_token=token, refresh_token=refresh)


def pod_of_token(token: object) -> Pod | None:
    if not isinstance(token, AccessToken):
        return None
    link = PodToken.objects.select_related("pod").filter(access_token=token).first()
    if link is None or not link.pod.is_active:
        return None
    return link.pod


@transaction.atomic
def pod_revoke(*, user: User, pod: Pod) -> Pod:
    """Revoke a pod: its tokens end and its live connection is closed, at once."""
    locked = Pod.objects.select_for_update().filter(pk=pod.pk, owner=user).first()
    if locked is None:
        raise NotFound(_("No such pod."), code="pod_not_found")
    if locked.status == Pod.Status.REVOKED:
        raise Conflict(_("This pod is already revoked."), code="already_revoked")
    locked.status = Pod.Status.REVOKED
    locked.revoked_at = timezone.now()
    locked.save(update_fields=["status", "revoked_at"])
    for link in PodToken.objects.filter(pod=locked).select_related("access_token", "refresh_token"):
        if link.refresh_token is not None:
            link.refresh_token.revoke()
        if link.access_token is not None:
            link.access_token.revoke()
    delivery.close_pod(locked.pk, CloseCode.FORBIDDEN)
    return locked


@transaction.atomic
def pod_rename(*, user: User, pod: Pod, name: str) -> Pod:
    name = name.strip()
    if not name or len(name) > 100:
        raise DomainError(_("A pod name is 1 to 100 characters."), code="invalid_name")
    locked = Pod.objects.select_for_update().filter(pk=pod.pk, owner=user).first()
    if locked is None:
        raise NotFound(_("No such pod."), code="pod_not_found")
    locked.name = name
    locked.save(update_fields=["name"])
    return locked


def pod_report(*, pod: Pod, categories: Any, agent_version: str = "") -> Pod:
    """The pod reports which categories it holds (names and coarse counts only)."""
    if not isinstance(categories, list) or len(categories) > 100:
        raise DomainError("categories must be a list.", code="invalid_report")
    clean: list[dict[str, Any]] = []
    for item in categories:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("slug"), str)
            or not 0 < len(item["slug"]) <= 100
            or not isinstance(item.get("count"), int)
            or isinstance(item.get("count"), bool)
            or item["count"] < 0
        ):
            raise DomainError("Each category is {slug, count}.", code="invalid_report")
        clean.append({"slug": item["slug"], "count": coarse_count(item["count"])})
    Pod.objects.filter(pk=pod.pk).update(
        categories_held=clean,
        agent_version=agent_version[:50] or pod.agent_version,
        last_seen_at=timezone.now(),
    )
    pod.refresh_from_db()
    return pod


def coarse_count(count: int) -> int:
    """Round a record count down to 1, 10, 100, ...: the owner sees scale, not exact numbers."""
    if count <= 0:
        return 0
    magnitude = 1
    while magnitude * 10 <= count:
        magnitude *= 10
    return magnitude


def pod_seen(*, pod_id: uuid.UUID | str) -> None:
    Pod.objects.filter(pk=pod_id).update(last_seen_at=timezone.now())


@transaction.atomic
def pod_provision(
    *, owner: User, name: str, public_key: bytes, categories: Any = ()
) -> tuple[Pod, str, str]:
    """Register a pod whose key was made by the operator, with tokens, skipping the device flow.

    For simulated pods only (demos, load tests, the compose file's pods service): the operator
    runs it with database access (``manage.py provision_pods``); nothing on the network can.
    Returns the pod, its access token and its refresh token.
    """
    pod = Pod.objects.create(
        owner=owner,
        name=name,
        public_key=public_key,
        fingerprint=key_fingerprint(public_key),
        agent_version="simulated",
        simulated=True,
        categories_held=[
            {"slug": c["slug"], "count": coarse_count(int(c["count"]))} for c in categories
        ],
    )
    key_log_append(pod=pod)
    application = pod_application()
    lifetime: Any = settings.OAUTH2_PROVIDER["ACCESS_TOKEN_EXPIRE_SECONDS"]
    # Stored as django-oauth-toolkit stores issued tokens: only their checksum when
    # COMPLIANT_BCP_RFC9700_TOKEN_STORAGE is on; the raw values are returned once.
    raw_access, raw_refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    access = AccessToken(
        user=owner,
        application=application,
        expires=timezone.now() + timedelta(seconds=int(lifetime)),
        scope="pod",
    )
    set_token_value(access, raw_access)
    access.save()
    refresh = RefreshToken(user=owner, application=application, access_token=access)
    set_token_value(refresh, raw_refresh)
    refresh.save()
    PodToken.objects.create(pod=pod, access_token=access, refresh_token=refresh)
    return pod, raw_access, raw_refresh
