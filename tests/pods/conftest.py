from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from oauth2_provider.models import AccessToken

from pods.key_log import key_log_append
from pods.models import Pod, PodToken, key_fingerprint
from pods.services import pod_application
from tests.factories import UserFactory


@dataclass
class PairedPod:
    pod: Pod
    key: Ed25519PrivateKey
    token: str


def make_paired_pod(*, expires_in: int = 3600, scope: str = "pod", owner: Any = None) -> PairedPod:
    """A pod as pairing leaves it: registered key, and a token linked to it."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    pod = Pod.objects.create(
        owner=owner or UserFactory(),
        name="Test pod",
        public_key=public,
        fingerprint=key_fingerprint(public),
    )
    application = pod_application()
    raw = f"pod-token-{pod.pk}-{expires_in}"
    token = AccessToken.objects.create(
        application=application,
        user=pod.owner,
        token=raw,
        scope=scope,
        expires=timezone.now() + timedelta(seconds=expires_in),
    )
    PodToken.objects.create(pod=pod, access_token=token)
    key_log_append(pod=pod)
    return PairedPod(pod=pod, key=key, token=raw)


@pytest.fixture
def paired_pod(transactional_db: Any) -> PairedPod:
    return make_paired_pod()
