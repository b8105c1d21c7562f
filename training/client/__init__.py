"""Python client for the Dataspace provider API (no Django needed; ships with the project).

client = DataspaceClient("https://dataspace.example", client_id, client_secret)
request = client.submit(spec, weights_path)
for status in client.watch(request["id"]):
    ...
client.download(request["id"], "model.safetensors")
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled"}


class ApiError(Exception):
    """An error answer from the API: ``code`` is stable, ``message`` is for people."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


class DataspaceClient:
    """OAuth2 client-credentials client; fetches and renews its bearer token by itself."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._token: str | None = None
        self._token_expires = 0.0

    def __repr__(self) -> str:
        return f"DataspaceClient({self.base_url!r}, client_id={self._client_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DataspaceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ------------------------------------------------------------------------------------

    def _fetch_token(self) -> str:
        response = self._http.post(
            "/o/token/",
            data={"grant_type": "client_credentials"},
            auth=(self._client_id, self._client_secret),
        )
        if response.status_code != 200:
            try:
                body = response.json()
                code, message = body.get("error", "token_error"), body.get("error_description", "")
            except ValueError:
                code, message = "token_error", response.text[:200]
            raise ApiError(response.status_code, str(code), message or "could not obtain a token")
        body = response.json()
        self._token = str(body["access_token"])
        self._token_expires = time.monotonic() + float(body.get("expires_in", 3600)) - 30
        return self._token

    def _bearer(self) -> str:
        if self._token is None or time.monotonic() >= self._token_expires:
            return self._fetch_token()
        return self._token

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._bearer()}", **kwargs.pop("headers", {})}
            response = self._http.request(method, f"/api/v1{path}", headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or revoked: fetch a fresh one once
                continue
            break
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    # -- API -------------------------------------------------------------------------------------

    def categories(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/categories/").json())

    def submit(
        self, spec: dict[str, Any] | str | Path, weights: bytes | str | Path
    ) -> dict[str, Any]:
        if isinstance(spec, str | Path):
            spec_text = Path(spec).read_text(encoding="utf-8")
        else:
            spec_text = json.dumps(spec)
        data = weights if isinstance(weights, bytes) else Path(weights).read_bytes()
        files = {"spec": (None, spec_text), "weights": ("weights.safetensors", data)}
        return dict(self._request("POST", "/model-requests/", files=files).json())

    def requests(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/model-requests/").json())

    def status(self, request_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/model-requests/{request_id}/").json())

    def rounds(self, request_id: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/model-requests/{request_id}/rounds/").json())

    def cancel(self, request_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/model-requests/{request_id}/cancel/").json())

    def model_card(self, request_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/model-requests/{request_id}/model-card").json())

    def download(self, request_id: str, path: str | Path) -> dict[str, Any]:
        """Stream the latest model to ``path`` and check its SHA-256 against the ETag."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        response = self._request("GET", f"/model-requests/{request_id}/model")
        with partial.open("wb") as handle:
            for chunk in response.iter_bytes():
                digest.update(chunk)
                handle.write(chunk)
        expected = response.headers.get("ETag", "").strip('"')
        if expected and expected != digest.hexdigest():
            partial.unlink(missing_ok=True)
            raise ApiError(200, "checksum_mismatch", "the download does not match its ETag")
        partial.replace(target)
        return {
            "path": str(target),
            "sha256": digest.hexdigest(),
            "round": int(response.headers.get("X-Dataspace-Round", "0")),
            "bytes": target.stat().st_size,
        }

    def watch(
        self,
        request_id: str,
        *,
        interval: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[dict[str, Any]]:
        """Yield the request's status on every change until it completes, fails or is cancelled."""
        last: tuple[Any, ...] | None = None
        while True:
            status = self.status(request_id)
            key = (status["status"], status["current_round"], status["epsilon_spent"])
            if key != last:
                last = key
                yield status
            if status["status"] in TERMINAL:
                return
            sleep(interval)


def _error_of(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["code"], error["message"], error.get("fields"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", f"HTTP {response.status_code}")


__all__ = ["TERMINAL", "ApiError", "DataspaceClient"]
