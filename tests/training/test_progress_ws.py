"""Live progress over Channels (``/ws/requests/<id>/``): who may subscribe, what they receive,
the request page's live region, and ``dataspace-provider watch`` against a live server.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import AccessToken

from dataspace.asgi import application
from pods.services import pod_application
from tests.factories import ProviderFactory, UserFactory, breast_category, open_request
from training import progress
from training.client import DataspaceClient
from training.consumers import Close
from training.models import ModelRequest, Provider, TrainingRound
from training.services import provider_client_issue

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


# -- helpers ---------------------------------------------------------------------------------------


def provider_token(
    provider: Provider | None,
    *,
    scope: str = "requests:read requests:write models:read",
    expires_in: int = 3600,
) -> str:
    application = provider_client_issue(provider=provider)[0] if provider else pod_application()
    raw = f"progress-{uuid.uuid4().hex}"
    AccessToken.objects.create(
        application=application,
        token=raw,
        scope=scope,
        expires=timezone.now() + timedelta(seconds=expires_in),
    )
    return raw


def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    return f"{django_settings.SESSION_COOKIE_NAME}={cookie.value}".encode()


def communicator(request_id: Any, *, cookie: bytes | None = None) -> WebsocketCommunicator:
    headers = [ORIGIN] + ([(b"cookie", cookie)] if cookie else [])
    return WebsocketCommunicator(application, f"/ws/requests/{request_id}/", headers=headers)


async def expect_close(comm: WebsocketCommunicator, code: int) -> None:
    while True:
        message = await comm.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            assert message["code"] == code
            return
        assert message["type"] != "websocket.send", f"data before close: {message}"


def event(model_request: ModelRequest, **fields: Any) -> dict[str, Any]:
    return {
        "request": str(model_request.pk),
        "status": "training",
        "round": 1,
        "attempt": 1,
        "stage": "masked_input",
        "cohort": 5,
        "survivors": None,
        "metrics": {},
        "at": timezone.now().isoformat(),
        **fields,
    }


async def send_event(model_request: ModelRequest, payload: dict[str, Any]) -> None:
    # progress.send bridges to the layer with async_to_sync: call it from a worker thread.
    await sync_to_async(progress.send)(model_request.pk, payload)


@pytest.fixture
def model_request() -> ModelRequest:
    return open_request()


@pytest.fixture(autouse=True)
async def _close_worker_connections() -> AsyncIterator[None]:
    """The consumer's ORM calls run on asgiref's worker thread; close its connection after each
    test so that the test database can be dropped at the end of the session.
    """
    yield
    await sync_to_async(connections.close_all)()


# -- portal users (session) ------------------------------------------------------------------------


async def test_signed_in_person_gets_a_snapshot_then_live_events(
    model_request: ModelRequest,
) -> None:
    user = await database_sync_to_async(UserFactory)()
    comm = communicator(model_request.pk, cookie=await database_sync_to_async(session_cookie)(user))

    connected, _ = await comm.connect()
    snapshot = await comm.receive_json_from()
    await send_event(model_request, event(model_request, metrics={"eval_accuracy": 0.75}))
    live = await comm.receive_json_from()

    assert connected
    assert snapshot["type"] == "progress"
    assert snapshot["request"] == str(model_request.pk)
    assert snapshot["status"] == "recruiting" and snapshot["round"] is None
    assert live["type"] == "progress"
    assert live["stage"] == "masked_input" and live["metrics"] == {"eval_accuracy": 0.75}
    await comm.disconnect()


async def test_snapshot_carries_the_latest_round(model_request: ModelRequest) -> None:
    def given_two_rounds() -> bytes:
        ModelRequest.objects.filter(pk=model_request.pk).update(status="training")
        TrainingRound.objects.create(
            model_request=model_request, number=1, status="completed", cohort_size=4
        )
        TrainingRound.objects.create(
            model_request=model_request,
            number=2,
            status="unmask",
            cohort_size=4,
            survivors=3,
            metrics={"eval_accuracy": 0.9, "secret_sauce": 1},
            epsilon=0.5,
        )
        return session_cookie(UserFactory())

    comm = communicator(model_request.pk, cookie=await database_sync_to_async(given_two_rounds)())
    await comm.connect()
    snapshot = await comm.receive_json_from()

    assert snapshot["status"] == "training"
    assert (snapshot["round"], snapshot["stage"], snapshot["survivors"]) == (2, "unmask", 3)
    assert snapshot["metrics"] == {"eval_accuracy": 0.9, "epsilon": 0.5}  # public metrics only
    await comm.disconnect()


async def test_person_cannot_follow_a_draft_or_unknown_request(
    model_request: ModelRequest,
) -> None:
    def given_a_draft() -> bytes:
        ModelRequest.objects.filter(pk=model_request.pk).update(status="draft")
        return session_cookie(UserFactory())

    cookie = await database_sync_to_async(given_a_draft)()
    for request_id in (model_request.pk, uuid.uuid4()):
        comm = communicator(request_id, cookie=cookie)
        await comm.connect()
        await expect_close(comm, Close.NOT_FOUND)


# -- providers (hello with a bearer token) ---------------------------------------------------------


async def test_provider_hello_with_a_good_token_receives_events(
    model_request: ModelRequest,
) -> None:
    token = await database_sync_to_async(provider_token)(model_request.provider)
    comm = communicator(model_request.pk)

    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": token})
    snapshot = await comm.receive_json_from()
    await send_event(model_request, event(model_request, status="completed", stage="completed"))
    live = await comm.receive_json_from()
    await comm.send_json_to({"type": "ping"})
    pong = await comm.receive_json_from()

    assert snapshot["type"] == "progress" and snapshot["status"] == "recruiting"
    assert live["status"] == "completed" and live["stage"] == "completed"
    assert pong == {"type": "pong"}
    await comm.disconnect()


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("not-a-token", Close.UNAUTHENTICATED),
        ("expired", Close.UNAUTHENTICATED),
        ("pod", Close.UNAUTHENTICATED),
        ("no-read-scope", Close.FORBIDDEN),
        ("other-provider", Close.NOT_FOUND),
    ],
)
async def test_provider_hello_is_refused(
    model_request: ModelRequest, given: str, code: Close
) -> None:
    def make() -> str:
        if given == "expired":
            return provider_token(model_request.provider, expires_in=-5)
        if given == "pod":
            return provider_token(None, scope="pod")
        if given == "no-read-scope":
            return provider_token(model_request.provider, scope="requests:write models:read")
        if given == "other-provider":
            return provider_token(ProviderFactory())
        return given

    token = await database_sync_to_async(make)()
    comm = communicator(model_request.pk)
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": token})
    await expect_close(comm, code)


async def test_unknown_request_is_not_found_for_a_provider(model_request: ModelRequest) -> None:
    token = await database_sync_to_async(provider_token)(model_request.provider)
    comm = communicator(uuid.uuid4())
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": token})
    await expect_close(comm, Close.NOT_FOUND)


async def test_anonymous_without_hello_is_closed_after_the_timeout(
    model_request: ModelRequest, settings: Any
) -> None:
    settings.PROGRESS_AUTH_TIMEOUT = 0.2
    comm = communicator(model_request.pk)
    connected, _ = await comm.connect()
    assert connected
    await expect_close(comm, Close.UNAUTHENTICATED)


async def test_anonymous_gets_no_events_before_hello(model_request: ModelRequest) -> None:
    comm = communicator(model_request.pk)
    await comm.connect()
    await send_event(model_request, event(model_request))
    assert await comm.receive_nothing(timeout=0.3)
    await comm.send_json_to({"type": "ping"})  # only hello is allowed before READY
    assert (await comm.receive_json_from())["type"] == "error"
    await expect_close(comm, Close.PROTOCOL)


# -- the request page ------------------------------------------------------------------------------


def test_request_page_shows_status_in_a_live_region(model_request: ModelRequest) -> None:
    client = Client()
    client.force_login(UserFactory())
    ModelRequest.objects.filter(pk=model_request.pk).update(status="training")
    TrainingRound.objects.create(
        model_request=model_request,
        number=1,
        status="masked_input",
        cohort_size=4,
        metrics={"eval_accuracy": 0.812},
    )

    page = client.get(reverse("portal:request", args=[model_request.pk])).content.decode()

    assert 'aria-live="polite"' in page
    assert f'data-progress-path="/ws/requests/{model_request.pk}/"' in page
    assert "Status: training · round 1 of" in page  # readable without JavaScript
    assert "collecting masked inputs · accuracy 81%" in page
    assert "consent/progress.js" in page


# -- the provider client ---------------------------------------------------------------------------


def test_watch_falls_back_to_polling_when_no_socket() -> None:
    request_id = str(uuid.uuid4())
    answers = iter(["recruiting", "training", "completed"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/o/token/":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        if request.url.path.endswith("/rounds/"):
            return httpx.Response(
                200,
                json=[
                    {
                        "number": 1,
                        "attempt": 1,
                        "status": "completed",
                        "cohort_size": 3,
                        "survivors": 3,
                        "metrics": {"eval_accuracy": 0.7, "secret": 1},
                        "epsilon": None,
                    }
                ],
            )
        return httpx.Response(200, json={"id": request_id, "status": next(answers)})

    # Nothing listens on port 9 here: the socket cannot open, so watch polls instead.
    client = DataspaceClient(
        "http://127.0.0.1:9", "id", "secret", transport=httpx.MockTransport(handler)
    )
    events = list(client.watch(request_id, sleep=lambda _: None))

    assert [e["status"] for e in events] == ["recruiting", "training", "completed"]
    assert events[-1]["round"] == 1 and events[-1]["metrics"] == {"eval_accuracy": 0.7}


def test_progress_url_follows_the_base_url() -> None:
    assert (
        DataspaceClient("https://ds.example/base/", "i", "s").progress_url("r")
        == "wss://ds.example/base/ws/requests/r/"
    )
    assert (
        DataspaceClient("http://127.0.0.1:8000", "i", "s").progress_url("r")
        == "ws://127.0.0.1:8000/ws/requests/r/"
    )


@pytest.fixture
def lines_of() -> Iterator[Any]:
    """Read a process's stdout line by line on a thread, so the test can wait with a timeout."""
    processes: list[subprocess.Popen[str]] = []

    def start(
        args: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
        process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        processes.append(process)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        return process, lines

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.e2e
def test_cli_watch_streams_events_until_completed(live_service: Any, lines_of: Any) -> None:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("the test process and the live server share events only through Redis")
    breast_category()
    provider = ProviderFactory()
    model_request = open_request(provider=provider)
    application, secret = provider_client_issue(provider=provider)
    env = {
        **os.environ,
        "DATASPACE_URL": live_service.url,
        "DATASPACE_CLIENT_ID": application.client_id,
        "DATASPACE_CLIENT_SECRET": secret,
    }
    process, lines = lines_of(
        [sys.executable, "-m", "training.client.cli", "watch", str(model_request.pk), "--json"],
        env,
    )

    snapshot = json.loads(lines.get(timeout=60))  # printed once the stream is subscribed
    progress.send(model_request.pk, event(model_request, stage="share_keys"))
    stage = json.loads(lines.get(timeout=30))
    progress.send(
        model_request.pk,
        event(model_request, status="completed", stage="completed", survivors=5),
    )
    final = json.loads(lines.get(timeout=30))
    returncode = process.wait(timeout=30)

    assert snapshot["status"] == "recruiting" and snapshot["request"] == str(model_request.pk)
    assert "type" not in snapshot
    assert stage["stage"] == "share_keys"
    assert final["status"] == "completed" and final["survivors"] == 5
    assert lines.get(timeout=5) is None  # nothing after the terminal event
    assert returncode == 0, process.stderr.read() if process.stderr else ""
