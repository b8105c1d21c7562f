"""The ASGI handler for HTTP (dataspace.asgi_http): the sync chain in one hop, threads kept."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from dataspace.asgi_http import RequestThreads, SyncChainASGIHandler


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _get(app: SyncChainASGIHandler, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    communicator: Any = ApplicationCommunicator(app, _scope(path))  # type: ignore[no-untyped-call]
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    return start["status"], {k.lower(): v for k, v in start["headers"]}, body


@pytest.mark.asyncio
async def test_a_request_runs_the_middleware_and_view_and_its_thread_is_kept(
    settings: Any,
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    app = SyncChainASGIHandler()
    status, headers, body = await _get(app, "/healthz")
    assert status == 200
    assert body == b'{"status": "ok"}'
    # The middleware ran (security headers), in sync mode: no adapter around any of it.
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"x-frame-options" in headers
    assert len(app.threads.idle) == 1
    kept = app.threads.idle[0]
    status, _, _ = await _get(app, "/healthz")
    assert status == 200
    assert app.threads.idle == [kept]  # the next request ran on the same thread


@pytest.mark.asyncio
async def test_errors_keep_their_json_answer(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    app = SyncChainASGIHandler()
    status, _, body = await _get(app, "/api/v1/pod/me/")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "not_authenticated"


def test_threads_beyond_those_kept_are_let_go() -> None:
    threads = RequestThreads(kept=1)
    one, two = threads.take(), threads.take()
    assert one is not two  # two requests at once: two threads
    one.submit(threading.get_ident).result()
    threads.give(one)
    threads.give(two)
    assert threads.idle == [one]
    assert threads.take() is one
    assert two._shutdown
