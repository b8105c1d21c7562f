"""Python client for the Dataspace provider API (no Django needed; ships with the project).

client = DataspaceClient("https://dataspace.example", client_id, client_secret)
request = client.submit(spec, weights_path)
for event in client.watch(request["id"]):  # live over WebSocket, polling as a fallback
    print(event["status"], event["round"], event["stage"], event["metrics"])
client.download(request["id"], "model.safetensors")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pods.agent.consent import verify_signed
from pods.agent.protocol import PUBLIC_METRICS, CloseCode

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

    def service_keys(self) -> dict[str, Any]:
        """The service's public signing keys (JWK Set): receipts and model cards."""
        response = self._http.get("/.well-known/dataspace/receipt-keys.json")
        if response.status_code >= 400:
            raise _error_of(response)
        return dict(response.json())

    def model_card(
        self, request_id: str, *, keys: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The signed model card ``{"card", "signature"}``, verified with ``keys`` (a JWK Set
        pinned earlier) or else the keys the service publishes; ``ApiError`` if it does not."""
        signed = dict(self._request("GET", f"/model-requests/{request_id}/model-card").json())
        try:
            verify_signed(signed, keys if keys is not None else self.service_keys(), "card")
        except ValueError:
            raise ApiError(
                200, "card_signature_invalid", "the model card's signature does not verify"
            ) from None
        return signed

    def model_card_page(self, request_id: str) -> str:
        """The model card as a readable HTML page (plots inline, no script)."""
        return self._request("GET", f"/model-requests/{request_id}/model-card.html").text

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
        stream: bool = True,
        check_every: float = 30.0,
    ) -> Iterator[dict[str, Any]]:
        """Yield progress events until the request completes, fails or is cancelled.

        Events come from the WebSocket ``/ws/requests/<id>/`` (the first one is a snapshot), in
        the shape of ``training.progress``: ``request``, ``status``, ``round``, ``attempt``,
        ``stage``, ``cohort``, ``survivors``, ``metrics``, ``at``. When the socket cannot be
        opened (or keeps dropping), the same events are built by polling the REST API every
        ``interval`` seconds. Identical consecutive events are yielded once.
        """
        last: str | None = None
        sources = [self._poll(request_id, interval=interval, sleep=sleep)]
        if stream:
            sources.insert(0, self._stream(request_id, check_every=check_every, sleep=sleep))
        for source in sources:
            with contextlib.closing(source):  # closes the socket when the caller stops early
                for event in source:
                    key = json.dumps({k: v for k, v in event.items() if k != "at"}, sort_keys=True)
                    if key != last:
                        last = key
                        yield event
                    if event.get("status") in TERMINAL:
                        return

    # -- progress sources ------------------------------------------------------------------------

    def progress_url(self, request_id: str) -> str:
        """The WebSocket URL of a request's progress, derived from the base URL."""
        scheme, _, rest = self.base_url.partition("://")
        ws_scheme = {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme)
        return f"{ws_scheme}://{rest}/ws/requests/{request_id}/"

    def _stream(
        self,
        request_id: str,
        *,
        check_every: float,
        sleep: Callable[[float], None],
        reconnects: int = 3,
    ) -> Generator[dict[str, Any]]:
        """Events from the socket. Ends (the caller then polls) if it cannot open or stay open.

        A 4401 close (token expired mid-stream) fetches a new token and reconnects; a silent
        socket is cross-checked with one REST call every ``check_every`` seconds, so a lost
        event can never leave ``watch`` waiting forever.
        """
        try:
            from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
            from websockets.sync.client import connect
            from websockets.typing import Origin
        except ImportError:  # pragma: no cover - websockets is a dependency
            return
        scheme, _, rest = self.base_url.partition("://")
        origin = Origin(f"{scheme}://{rest.split('/', 1)[0]}")
        failures = 0
        while failures <= reconnects:
            received = False
            try:
                with connect(self.progress_url(request_id), origin=origin, open_timeout=10) as ws:
                    ws.send(json.dumps({"type": "hello", "token": self._bearer()}))
                    while True:
                        try:
                            raw = ws.recv(timeout=check_every)
                        except TimeoutError:
                            yield self._polled_event(request_id)
                            continue
                        message = json.loads(raw)
                        if not isinstance(message, dict) or message.get("type") != "progress":
                            continue
                        received, failures = True, 0
                        yield {k: v for k, v in message.items() if k != "type"}
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == CloseCode.UNAUTHENTICATED:
                    self._token = None  # expired or revoked: the next hello uses a fresh one
                elif code is not None and CloseCode.PROTOCOL <= code < 4500:
                    return  # refused (scope, not found): the REST API gives the real error
            except (OSError, InvalidHandshake, InvalidURI, ValueError):
                if not received and failures == 0:
                    return  # no socket here (old server, proxy): poll instead
            failures += 1
            if failures <= reconnects:
                sleep(min(2.0**failures, 10.0))

    def _poll(
        self, request_id: str, *, interval: float, sleep: Callable[[float], None]
    ) -> Generator[dict[str, Any]]:
        while True:
            yield self._polled_event(request_id)
            sleep(interval)

    def _polled_event(self, request_id: str) -> dict[str, Any]:
        """A progress event built from the REST API: the request and its latest round."""
        status = self.status(request_id)
        latest: dict[str, Any] | None = None
        if status["status"] not in {"draft", "recruiting"}:
            rounds = self.rounds(request_id)
            latest = rounds[-1] if rounds else None
        event: dict[str, Any] = {
            "request": str(status["id"]),
            "status": status["status"],
            "round": None,
            "attempt": None,
            "stage": None,
            "cohort": None,
            "survivors": None,
            "metrics": {},
            "at": datetime.now(UTC).isoformat(),
        }
        if latest is not None:
            metrics = {
                k: v for k, v in (latest.get("metrics") or {}).items() if k in PUBLIC_METRICS
            }
            if latest.get("epsilon") is not None:
                metrics["epsilon"] = latest["epsilon"]
            event.update(
                round=latest["number"],
                attempt=latest["attempt"],
                stage=latest["status"],
                cohort=latest["cohort_size"],
                survivors=latest["survivors"],
                metrics=metrics,
            )
        return event


def _error_of(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["code"], error["message"], error.get("fields"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", f"HTTP {response.status_code}")


__all__ = ["TERMINAL", "ApiError", "DataspaceClient"]
