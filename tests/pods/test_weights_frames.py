"""The pod's side of weights frames: kept only if they hash to their header, handed to the
download of the task that names that hash; anything else leaves the pod downloading."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from pods.agent.channel import PodChannel
from pods.agent.home import PodHome, PodState
from pods.agent.protocol import WEIGHTS_FRAME, read_weights_frame, weights_frame
from pods.agent.service import PodService

BLOB = b"safetensors weights" * 100
SHA = hashlib.sha256(BLOB).hexdigest()
DOWNLOADED = b"downloaded over HTTP"


class FakeSocket:
    """What a service sends, in order; then the channel waits."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = list(frames)
        self.sent: list[str | bytes] = []

    async def recv(self) -> str | bytes:
        if self.frames:
            return self.frames.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, data: str | bytes) -> None:
        self.sent.append(data)


def pod(tmp_path: Path) -> tuple[PodChannel, PodService, list[str]]:
    requested: list[str] = []

    def http(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path)
        return httpx.Response(200, content=DOWNLOADED)

    state = PodState(server="http://testserver", pod_id="p", access_token="t")
    home = PodHome(tmp_path)
    service = PodService(home, state, transport=httpx.MockTransport(http))
    return PodChannel(home, state, service, on_event=lambda _: None), service, requested


def task_message(sha256: str, url: str = "/api/v1/pod/rounds/7/weights") -> str:
    task = {"weights_url": url, "weights_sha256": sha256}
    return json.dumps({"type": "round.stage", "round": 7, "stage": "advertise_keys", "task": task})


async def run(channel: PodChannel, frames: list[str | bytes], service: PodService) -> bytes:
    """Feed the channel ``frames``; what the handler's download of the task's weights got."""
    got: list[bytes] = []

    async def handler(message: dict[str, Any], ws: Any) -> None:
        got.append(await asyncio.to_thread(service.download, message["task"]["weights_url"]))
        stop.set()

    stop = asyncio.Event()
    channel.handler = handler
    await asyncio.wait_for(channel._session(FakeSocket(frames), 3600, stop), 5)  # type: ignore[arg-type]
    return got[0]


def test_a_frame_is_read_only_when_its_body_hashes_to_its_header() -> None:
    assert read_weights_frame(weights_frame(BLOB, SHA)) == (SHA, BLOB)
    assert read_weights_frame(weights_frame(BLOB + b"x", SHA)) is None
    assert read_weights_frame(b"DSM1" + bytes(WEIGHTS_FRAME.size)) is None
    assert read_weights_frame(b"short") is None


def test_the_task_takes_the_frame_of_its_hash_without_a_download(tmp_path: Path) -> None:
    channel, service, requested = pod(tmp_path)
    got = asyncio.run(run(channel, [weights_frame(BLOB, SHA), task_message(SHA)], service))
    assert got == BLOB and requested == []
    # Used once: asked again later (a reconnection), the pod downloads.
    assert service.download("/api/v1/pod/rounds/7/weights") == DOWNLOADED


@pytest.mark.parametrize(
    "frame",
    [
        weights_frame(BLOB[:-1] + b"!", SHA),  # altered on the way: not kept
        weights_frame(b"other weights", hashlib.sha256(b"other weights").hexdigest()),
    ],
)
def test_a_frame_that_is_not_the_tasks_weights_leaves_the_pod_downloading(
    tmp_path: Path, frame: bytes
) -> None:
    channel, service, requested = pod(tmp_path)
    assert asyncio.run(run(channel, [frame, task_message(SHA)], service)) == DOWNLOADED
    assert requested == ["/api/v1/pod/rounds/7/weights"]
