"""Secrets at rest (issue 13): no usable token in the database, none accepted in a query
string, and the embedded default's files readable by their owner only."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from oauth2_provider.models import AccessToken, RefreshToken

from pods.models import Pod
from tests.factories import ProviderFactory, breast_category
from training.services import provider_client_issue

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def issue_provider_token() -> str:
    breast_category()
    application, secret = provider_client_issue(provider=ProviderFactory())
    response = Client().post(
        "/o/token/",
        {
            "grant_type": "client_credentials",
            "client_id": application.client_id,
            "client_secret": secret,
            "scope": "requests:read",
        },
    )
    assert response.status_code == 200, response.content
    return str(response.json()["access_token"])


def test_issued_access_tokens_are_stored_only_as_a_checksum() -> None:
    raw = issue_provider_token()
    stored = AccessToken.objects.get()
    assert stored.token == ""
    assert raw not in {str(v) for v in AccessToken.objects.values_list(flat=False).get()}
    # Still usable by whoever holds it.
    response = Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/categories/")
    assert response.status_code == 200, response.content


def test_a_token_in_the_query_string_is_refused() -> None:
    raw = issue_provider_token()
    response = Client().get("/api/v1/categories/", {"access_token": raw})
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"not_authenticated", "invalid_token"}


def test_provisioned_pod_tokens_are_stored_only_as_checksums(tmp_path: Path) -> None:
    breast_category()
    call_command(
        "provision_pods",
        simulated=True,
        count=1,
        homes=tmp_path,
        server="http://127.0.0.1:1",
        stdout=io.StringIO(),
    )
    assert Pod.objects.count() == 1
    assert list(AccessToken.objects.values_list("token", flat=True)) == [""]
    assert list(RefreshToken.objects.values_list("token", flat=True)) == [""]
    state = next(tmp_path.rglob("state.json")).read_text()
    assert AccessToken.objects.get().token_checksum
    assert "access_token" in state


def test_uploaded_files_are_owner_only(settings: Any) -> None:
    name = default_storage.save("requests/x/initial.safetensors", ContentFile(b"abc"))
    path = Path(settings.MEDIA_ROOT) / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_embedded_default_data_dir_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT"}
    }
    env.update(DEBUG="1", DATASPACE_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "dataspace.sqlite3" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_token_sent_in_a_query_string_never_reaches_the_access_log(
    transactional_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataspace.processes import server_command
    from tests import live

    # The live servers of the other tests run without an access log; this one has it, as
    # production does.
    monkeypatch.setattr(
        live,
        "server_command",
        lambda port, **kw: [a for a in server_command(port, **kw) if a != "--no-access-log"],
    )
    raw = issue_provider_token()
    service = live.on_test_database(tmp_path).start()
    try:
        response = httpx.get(
            f"{service.url}/api/v1/categories/",
            params={"access_token": raw, "refresh_token": "r-" + raw},
            timeout=10,
        )
        assert response.status_code == 401
        httpx.get(f"{service.url}/healthz", timeout=10)  # flushes the line before
    finally:
        service.stop()
    log = service.log_path.read_text()
    assert "/api/v1/categories/?access_token=[redacted]&refresh_token=[redacted]" in log
    assert raw not in log
