"""The pod's HTTP side: pairing (RFC 8628 device flow), tokens, reports, receipts, weights."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from .home import PodHome, PodState
from .protocol import on_pinned_origin, pairing_message

POD_CLIENT_ID = "dataspace-pod"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class ServiceError(Exception):
    """The service refused or could not be reached; the message is one line for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _error(response: httpx.Response) -> ServiceError:
    try:
        body = response.json()
    except ValueError:
        return ServiceError("http_error", f"HTTP {response.status_code}")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return ServiceError(str(body["error"].get("code")), str(body["error"].get("message")))
    if isinstance(body, dict) and "error" in body:
        return ServiceError(str(body["error"]), str(body.get("error_description", "")))
    return ServiceError("http_error", f"HTTP {response.status_code}")


# Weights received on the channel and not downloaded yet, kept at most (one per open task).
RECEIVED_KEPT = 2


class PodService:
    """Calls the service for one pod; renews the access token with the refresh token."""

    def __init__(
        self,
        home: PodHome,
        state: PodState,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.home = home
        self.state = state
        self._http = httpx.Client(base_url=state.server, timeout=timeout, transport=transport)
        # Weights that came on the control channel, by the path a task names for them
        # (pods.agent.channel): the next download of that path takes them instead.
        self._received: dict[str, bytes] = {}

    def close(self) -> None:
        self._http.close()

    # -- pairing ---------------------------------------------------------------------------------

    def start_pairing(self, name: str, agent_version: str) -> dict[str, Any]:
        """Ask for a device code, then bind our name and identity key to it (signed proof)."""
        response = self._http.post("/o/device-authorization/", data={"client_id": POD_CLIENT_ID})
        if response.status_code != 200:
            raise _error(response)
        grant = dict(response.json())
        key = self.home.identity()
        public_key = key.public_key().public_bytes_raw()
        signature = key.sign(pairing_message(grant["device_code"], public_key))
        bound = self._http.post(
            "/api/v1/pod/pairing/",
            json={
                "device_code": grant["device_code"],
                "name": name,
                "public_key": base64.b64encode(public_key).decode(),
                "signature": base64.b64encode(signature).decode(),
                "agent_version": agent_version,
            },
        )
        if bound.status_code != 201:
            raise _error(bound)
        if bound.json()["fingerprint"] != self.home.fingerprint():
            raise ServiceError("fingerprint_mismatch", "the service saw a different key")
        return grant

    def wait_for_approval(
        self,
        grant: dict[str, Any],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Poll the token endpoint until the person approves (RFC 8628 section 3.4/3.5)."""
        interval = float(grant.get("interval", 5))
        deadline = clock() + float(grant.get("expires_in", 600))
        while clock() < deadline:
            response = self._http.post(
                "/o/token/",
                data={
                    "grant_type": DEVICE_GRANT,
                    "device_code": grant["device_code"],
                    "client_id": POD_CLIENT_ID,
                },
            )
            body = response.json()
            if response.status_code == 200:
                self._store_tokens(body)
                return
            error = body.get("error")
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise ServiceError(str(error), str(body.get("error_description") or error))
            sleep(interval)
        raise ServiceError("expired_token", "the code expired before it was approved")

    def _store_tokens(self, body: dict[str, Any]) -> None:
        self.state.access_token = str(body["access_token"])
        self.state.refresh_token = str(body.get("refresh_token") or self.state.refresh_token)
        self.home.save_state(self.state)

    def refresh(self) -> None:
        response = self._http.post(
            "/o/token/",
            data={
                "grant_type": "refresh_token",
                "refresh_token": self.state.refresh_token,
                "client_id": POD_CLIENT_ID,
            },
        )
        if response.status_code != 200:
            raise _error(response)
        self._store_tokens(response.json())

    # -- authenticated calls ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated call to the service this pod paired with. ``path`` must be a path on
        that origin: the bearer token never goes to a URL a message names elsewhere."""
        if not on_pinned_origin(path):
            raise ServiceError("origin_not_pinned", "the service named a URL outside its origin")
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {self.state.access_token}",
                **kwargs.pop("headers", {}),
            }
            response = self._http.request(method, path, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1 and self.state.refresh_token:
                self.refresh()
                continue
            break
        if response.status_code >= 400:
            raise _error(response)
        return response

    def me(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/pod/me/").json())

    def report(self, counts: dict[str, int], agent_version: str) -> dict[str, Any]:
        categories = [{"slug": slug, "count": count} for slug, count in sorted(counts.items())]
        body = {"categories": categories, "agent_version": agent_version}
        return dict(self.request("POST", "/api/v1/pod/me/report/", json=body).json())

    def categories(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/pod/categories/").json())

    def receipt(self, request_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/pod/receipts/{request_id}/").json())

    def download(self, path: str) -> bytes:
        """A round's global weights (safetensors): the ones the channel received for ``path``,
        if any, else over HTTP. Either way the caller checks them against the task's hash."""
        received = self._received.pop(path, None)
        if received is not None:
            return received
        return bytes(self.request("GET", path).content)

    def received(self, path: str, blob: bytes) -> None:
        """Weights the control channel received for the task that names them at ``path``."""
        self._received[path] = blob
        while len(self._received) > RECEIVED_KEPT:  # a task declined before its download
            del self._received[next(iter(self._received))]

    def upload(self, path: str, body: bytes) -> None:
        """A masked input: octet-stream, with its SHA-256 for the service to check."""
        self.request(
            "PUT",
            path,
            content=body,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Content-SHA256": hashlib.sha256(body).hexdigest(),
            },
        )

    # -- the key log -----------------------------------------------------------------------------

    def key_log_head(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/pod/key-log/head/").json())

    def key_log_consistency(self, first: int, second: int) -> dict[str, Any]:
        params = {"first": first, "second": second}
        return dict(self.request("GET", "/api/v1/pod/key-log/consistency/", params=params).json())

    def key_log_mine(self, tree_size: int) -> dict[str, Any]:
        params = {"tree_size": tree_size}
        return dict(self.request("GET", "/api/v1/pod/key-log/mine/", params=params).json())

    def key_log_pod_entry(self, pod_id: str, tree_size: int) -> dict[str, Any]:
        path = f"/api/v1/pod/key-log/pods/{pod_id}/"
        return dict(self.request("GET", path, params={"tree_size": tree_size}).json())
