"""`dataspace-provider` as a separate process against a live server process."""

from __future__ import annotations

import hashlib
import html
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dataspace.demo import demo_request_spec, demo_weights
from tests.factories import breast_category
from training.models import ModelRequest
from training.services import provider_client_issue, provider_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def cli(live_service: Any, creds: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATASPACE_URL": live_service.url,
        "DATASPACE_CLIENT_ID": creds["client_id"],
        "DATASPACE_CLIENT_SECRET": creds["client_secret"],
    }
    return subprocess.run(
        [sys.executable, "-m", "training.client.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def creds() -> dict[str, str]:
    breast_category()
    provider = provider_create(name="CLI Lab", contact_email="cli@lab.example")
    application, secret = provider_client_issue(provider=provider)
    return {"client_id": application.client_id, "client_secret": secret}


def submit_demo(
    live_service: Any, creds: dict[str, str], tmp_path: Path
) -> tuple[dict[str, Any], Path, str]:
    """Submit the demo request with the CLI: its spec, weights file and request id."""
    spec = demo_request_spec()
    spec_path, weights_path = tmp_path / "spec.json", tmp_path / "w.safetensors"
    spec_path.write_text(json.dumps(spec))
    weights_path.write_bytes(demo_weights(spec))
    submitted = cli(live_service, creds, "--json", "submit", str(spec_path), str(weights_path))
    assert submitted.returncode == 0, submitted.stderr
    return spec, weights_path, json.loads(submitted.stdout)["id"]


def test_submit_status_download_cancel(
    live_service: Any, creds: dict[str, str], tmp_path: Path
) -> None:
    _, weights_path, request_id = submit_demo(live_service, creds, tmp_path)
    assert ModelRequest.objects.filter(pk=request_id, status="recruiting").exists()

    status = cli(live_service, creds, "status", request_id)
    assert status.returncode == 0
    assert "recruiting" in status.stdout

    out = tmp_path / "model.safetensors"
    downloaded = cli(live_service, creds, "--json", "download", request_id, "-o", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    assert json.loads(downloaded.stdout)["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert out.read_bytes() == weights_path.read_bytes()

    cancelled = cli(live_service, creds, "--json", "cancel", request_id)
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    watched = cli(live_service, creds, "--json", "watch", request_id)
    assert json.loads(watched.stdout.splitlines()[-1])["status"] == "cancelled"
    assert watched.returncode == 1  # the request did not complete


def test_errors_are_one_line_with_the_code(
    live_service: Any, creds: dict[str, str], tmp_path: Path
) -> None:
    spec = demo_request_spec()
    spec["training"]["loss"] = "hinge"
    spec_path, weights_path = tmp_path / "spec.json", tmp_path / "w.safetensors"
    spec_path.write_text(json.dumps(spec))
    weights_path.write_bytes(demo_weights(demo_request_spec()))

    refused = cli(live_service, creds, "submit", str(spec_path), str(weights_path))
    bad_creds = cli(live_service, {**creds, "client_secret": "wrong"}, "list")
    missing = cli(live_service, creds, "status", "00000000-0000-0000-0000-000000000000")

    assert refused.returncode == 1
    assert refused.stderr.startswith("dataspace-provider: error: unknown_loss:")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert bad_creds.returncode == 1
    assert "invalid_client" in bad_creds.stderr
    assert "wrong" not in bad_creds.stderr
    assert missing.stderr.startswith("dataspace-provider: error: not_found:")
    assert ModelRequest.objects.count() == 0


def test_card_is_verified_before_it_is_shown(
    live_service: Any, creds: dict[str, str], tmp_path: Path
) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    spec, _, request_id = submit_demo(live_service, creds, tmp_path)

    page = tmp_path / "card.html"
    shown = cli(live_service, creds, "--json", "card", request_id, "--html", str(page))
    assert shown.returncode == 0, shown.stderr
    signed = json.loads(shown.stdout)
    assert signed["card"]["intended_use"]["intended_use"] == spec["intended_use"]
    assert signed["card"]["model_details"]["plan_hash"]
    assert html.escape(spec["out_of_scope_uses"][0]) in page.read_text("utf-8")

    # Pinned to another key (here: a stranger's), the same card does not verify.
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    x = base64.urlsafe_b64encode(other).decode().rstrip("=")
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": signed["signature"]["kid"]}]}
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(jwks))
    refused = cli(live_service, creds, "card", request_id, "--keys", str(keys))
    assert refused.returncode == 1
    assert refused.stderr.startswith("dataspace-provider: error: card_signature_invalid:")
    assert len(refused.stderr.strip().splitlines()) == 1
