"""The pod control channel, driven with Channels' WebsocketCommunicator."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dataspace.asgi import application
from pods.agent.protocol import PING_TEXT, challenge_message
from pods.consumers import Close, heartbeats
from pods.models import Pod
from pods.presence import online_pods
from tests.pods.conftest import PairedPod, make_paired_pod

pytestmark = pytest.mark.django_db(transaction=True)


def communicator() -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/pods/", headers=[(b"origin", b"http://127.0.0.1")]
    )


async def expect_close(comm: WebsocketCommunicator, code: int) -> None:
    while True:
        message = await comm.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            assert message["code"] == code
            return


async def handshake(comm: WebsocketCommunicator, pod: PairedPod, **hello: Any) -> dict[str, Any]:
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "hello", "token": pod.token, **hello})
    challenge = await comm.receive_json_from()
    assert challenge["type"] == "challenge"
    nonce = base64.b64decode(challenge["nonce"])
    signature = pod.key.sign(challenge_message(nonce, challenge["pod_id"]))
    await comm.send_json_to({"type": "prove", "signature": base64.b64encode(signature).decode()})
    return dict(challenge)


async def test_handshake_heartbeat_and_presence(paired_pod: PairedPod) -> None:
    comm = communicator()
    await handshake(comm, paired_pod)
    welcome = await comm.receive_json_from()
    assert welcome["type"] == "welcome" and welcome["pod_id"] == str(paired_pod.pod.pk)
    assert await database_sync_to_async(
        lambda: list(online_pods().values_list("pk", flat=True))
    )() == [paired_pod.pod.pk]
    await comm.disconnect()
    assert await database_sync_to_async(lambda: online_pods().count())() == 0


@pytest.mark.parametrize("ping", [PING_TEXT, '{"type":"ping"}'], ids=["agent", "other-json"])
async def test_a_heartbeat_is_noted_and_not_answered(paired_pod: PairedPod, ping: str) -> None:
    """The agent's heartbeat is known by its text; a ping written otherwise is parsed."""
    heartbeats.seen.clear()
    comm = communicator()
    await handshake(comm, paired_pod)
    assert (await comm.receive_json_from())["type"] == "welcome"
    await comm.send_to(text_data=ping)
    assert await comm.receive_nothing(timeout=0.5)
    assert set(heartbeats.seen) == {str(paired_pod.pod.pk)}
    await comm.disconnect()
    heartbeats.seen.clear()


async def test_a_heartbeat_before_the_proof_is_refused(paired_pod: PairedPod) -> None:
    heartbeats.seen.clear()
    comm = communicator()
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": paired_pod.token})
    assert (await comm.receive_json_from())["type"] == "challenge"
    await comm.send_to(text_data=PING_TEXT)
    assert (await comm.receive_json_from())["code"] == "unexpected_message"
    await expect_close(comm, Close.PROTOCOL)
    assert heartbeats.seen == {}


async def test_heartbeats_are_written_in_one_batch_for_the_live_channel_only(
    paired_pod: PairedPod,
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from pods.consumers import heartbeats

    heartbeats.seen.clear()  # an earlier test's pings, its loop gone
    other = await database_sync_to_async(make_paired_pod)()
    comms = [communicator(), communicator()]
    for comm, pod in zip(comms, (paired_pod, other), strict=True):
        await handshake(comm, pod)
        assert (await comm.receive_json_from())["type"] == "welcome"
    long_ago = timezone.now() - timedelta(hours=1)
    await database_sync_to_async(
        lambda: Pod.objects.filter(pk__in=[paired_pod.pod.pk, other.pod.pk]).update(
            last_seen_at=long_ago
        )
    )()
    for comm in comms:
        await comm.send_to(text_data=PING_TEXT)
        assert await comm.receive_nothing(timeout=0.5)
    # The second pod reconnected elsewhere meanwhile: its old channel's beat is not its own.
    await database_sync_to_async(
        lambda: Pod.objects.filter(pk=other.pod.pk).update(channel_name="elsewhere")
    )()
    assert set(heartbeats.seen) == {str(paired_pod.pod.pk), str(other.pod.pk)}
    await heartbeats.flush()
    seen = dict(
        await database_sync_to_async(lambda: list(Pod.objects.values_list("pk", "last_seen_at")))()
    )
    assert seen[paired_pod.pod.pk] > long_ago
    assert seen[other.pod.pk] == long_ago
    assert heartbeats.seen == {}
    for comm in comms:
        await comm.disconnect()


async def test_a_proven_connection_binds_its_token_until_it_closes(paired_pod: PairedPod) -> None:
    from pods import live_tokens

    comm = communicator()
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": paired_pod.token})
    assert (await comm.receive_json_from())["type"] == "challenge"
    assert live_tokens.live_pod(paired_pod.token) is None  # a token alone binds nothing
    await comm.disconnect()

    comm = communicator()
    await handshake(comm, paired_pod)
    assert (await comm.receive_json_from())["type"] == "welcome"
    live = live_tokens.live_pod(paired_pod.token)
    assert live is not None and live.pod_id == str(paired_pod.pod.pk)
    await comm.disconnect()
    assert live_tokens.live_pod(paired_pod.token) is None


async def test_bad_token_is_refused(paired_pod: PairedPod) -> None:
    comm = communicator()
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": "not-a-token"})
    await expect_close(comm, Close.UNAUTHENTICATED)


async def test_expired_or_provider_token_is_refused(transactional_db: Any) -> None:
    expired = await database_sync_to_async(make_paired_pod)(expires_in=-5)
    provider_scoped = await database_sync_to_async(make_paired_pod)(scope="requests:read")
    for pod in (expired, provider_scoped):
        comm = communicator()
        await comm.connect()
        await comm.send_json_to({"type": "hello", "token": pod.token})
        await expect_close(comm, Close.UNAUTHENTICATED)


async def test_bad_signature_is_refused(paired_pod: PairedPod) -> None:
    comm = communicator()
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": paired_pod.token})
    challenge = await comm.receive_json_from()
    other = await database_sync_to_async(make_paired_pod)()
    forged = other.key.sign(
        challenge_message(base64.b64decode(challenge["nonce"]), challenge["pod_id"])
    )
    await comm.send_json_to({"type": "prove", "signature": base64.b64encode(forged).decode()})
    await expect_close(comm, Close.UNAUTHENTICATED)


async def test_replayed_challenge_answer_is_refused(paired_pod: PairedPod) -> None:
    first = communicator()
    await first.connect()
    await first.send_json_to({"type": "hello", "token": paired_pod.token})
    old = await first.receive_json_from()
    old_signature = paired_pod.key.sign(
        challenge_message(base64.b64decode(old["nonce"]), old["pod_id"])
    )
    await first.disconnect()

    second = communicator()
    await second.connect()
    await second.send_json_to({"type": "hello", "token": paired_pod.token})
    await second.receive_json_from()  # a fresh nonce
    await second.send_json_to(
        {"type": "prove", "signature": base64.b64encode(old_signature).decode()}
    )
    await expect_close(second, Close.UNAUTHENTICATED)


async def test_revoked_pod_is_refused_and_live_connection_closed(paired_pod: PairedPod) -> None:
    from pods.services import pod_revoke

    comm = communicator()
    await handshake(comm, paired_pod)
    await comm.receive_json_from()  # welcome
    pod = await database_sync_to_async(Pod.objects.select_related("owner").get)(
        pk=paired_pod.pod.pk
    )
    await database_sync_to_async(pod_revoke)(user=pod.owner, pod=pod)
    await expect_close(comm, Close.FORBIDDEN)

    again = communicator()
    await again.connect()
    await again.send_json_to({"type": "hello", "token": paired_pod.token})
    await expect_close(again, Close.UNAUTHENTICATED)


async def test_pausing_all_training_closes_the_connection_and_refuses_new_ones(
    paired_pod: PairedPod,
) -> None:
    from consent.services import training_pause_set

    comm = communicator()
    await handshake(comm, paired_pod)
    await comm.receive_json_from()  # welcome
    pod = await database_sync_to_async(Pod.objects.select_related("owner").get)(
        pk=paired_pod.pod.pk
    )
    await database_sync_to_async(training_pause_set)(user=pod.owner, paused=True)
    await expect_close(comm, Close.PAUSED)

    again = communicator()
    await handshake(again, paired_pod)
    await expect_close(again, Close.PAUSED)

    await database_sync_to_async(training_pause_set)(user=pod.owner, paused=False)
    resumed = communicator()
    await handshake(resumed, paired_pod)
    assert (await resumed.receive_json_from())["type"] == "welcome"
    await resumed.disconnect()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "prove", "signature": "AAAA"},  # before hello
        {"type": "ping"},  # before authentication
        {"type": "masked_input", "round": 1},  # unknown here
        {"no": "type"},
        ["a", "list"],
    ],
)
async def test_out_of_order_unknown_or_malformed_messages_close(
    paired_pod: PairedPod, message: Any
) -> None:
    comm = communicator()
    await comm.connect()
    await comm.send_json_to(message)
    await expect_close(comm, Close.PROTOCOL)


async def test_unknown_type_after_welcome_closes(paired_pod: PairedPod) -> None:
    comm = communicator()
    await handshake(comm, paired_pod)
    await comm.receive_json_from()
    await comm.send_json_to({"type": "hello", "token": paired_pod.token})  # hello twice
    assert (await comm.receive_json_from())["code"] == "unexpected_message"
    await expect_close(comm, Close.PROTOCOL)


async def test_invalid_json_closes(paired_pod: PairedPod) -> None:
    comm = communicator()
    await comm.connect()
    await comm.send_to(text_data="{not json")
    await expect_close(comm, Close.PROTOCOL)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "hello", "token": ' + "[" * 5000 + "]" * 5000 + "}",  # RecursionError before
        '{"type": "hello", "token": "a\\u0000b"}',  # a NUL in a string
    ],
)
async def test_deep_or_nul_json_closes_with_the_protocol_code(
    paired_pod: PairedPod, text: str
) -> None:
    comm = communicator()
    await comm.connect()
    await comm.send_to(text_data=text)
    await expect_close(comm, Close.PROTOCOL)


async def test_second_connection_replaces_the_first(paired_pod: PairedPod) -> None:
    first = communicator()
    await handshake(first, paired_pod)
    await first.receive_json_from()
    second = communicator()
    await handshake(second, paired_pod)
    await second.receive_json_from()
    await expect_close(first, Close.REPLACED)
    layer = get_channel_layer()
    assert layer is not None
    await second.disconnect()


async def test_round_replies_are_checked_before_the_rounds_engine(paired_pod: PairedPod) -> None:
    comm = communicator()
    await handshake(comm, paired_pod)
    await comm.receive_json_from()
    await comm.send_json_to(
        {"type": "round.reply", "round": 999, "stage": "advertise_keys", "payload": {}}
    )
    assert await comm.receive_json_from() == {
        "type": "error",
        "code": "unknown_round",
        "round": 999,
    }
    await comm.send_json_to({"type": "round.reply", "round": "x", "stage": "advertise_keys"})
    await expect_close(comm, Close.PROTOCOL)


@pytest.mark.parametrize("frames", [0, 16 << 20, 64])
async def test_a_stage_not_answered_yet_is_asked_again_on_connecting(
    paired_pod: PairedPod, frames: int
) -> None:
    """A pod offline when its round opened (or cut off mid-stage) is asked again on arrival;
    the task's weights come first as a binary frame if the pod's hello takes frames that big
    (else the pod downloads them)."""
    from django.utils import timezone

    from consent.services import consent_grant
    from tests.factories import open_request
    from tests.training.rounds.test_engine import consenting_online_pod
    from training.rounds import opening

    def open_round_while_the_pod_is_away() -> int:
        model_request = open_request(cohort_size=3, min_participants=3)
        pod = paired_pod.pod
        consent_grant(user=pod.owner, model_request=model_request, pod=pod)
        Pod.objects.filter(pk=pod.pk).update(
            channel_name="earlier-connection",
            last_seen_at=timezone.now(),
            categories_held=[{"slug": "health.breast_screening", "count": 10}],
        )
        for i in range(2):
            consenting_online_pod(model_request, f"o{i}")
        training_round = opening.request_try_start(model_request)
        assert training_round is not None
        Pod.objects.filter(pk=pod.pk).update(channel_name="")  # the connection dropped
        return training_round.pk

    round_id = await database_sync_to_async(open_round_while_the_pod_is_away)()
    comm = communicator()
    await handshake(comm, paired_pod, **({"weights_frames": frames} if frames else {}))
    assert (await comm.receive_json_from())["type"] == "welcome"
    weights = None
    if frames > 64:
        weights = await comm.receive_output(timeout=5)
        assert weights["type"] == "websocket.send" and weights.get("bytes")
    asked = await comm.receive_json_from()
    assert asked["type"] == "round.stage" and asked["round"] == round_id
    assert asked["stage"] == "advertise_keys" and asked["task"]["request"]
    if weights is not None:
        from pods.agent.protocol import read_weights_frame

        assert read_weights_frame(weights["bytes"]) is not None
        sha256, _ = read_weights_frame(weights["bytes"]) or ("", b"")
        assert sha256 == asked["task"]["weights_sha256"]
    assert await comm.receive_nothing()
    await comm.disconnect()


async def test_a_task_sent_to_a_live_pod_comes_after_its_weights_frame(
    paired_pod: PairedPod,
) -> None:
    """A round's task, sent through the channel layer (one JSON text per pod), is preceded
    on a connection that takes weights frames by the weights it names, read once per process;
    any other message goes alone, and so does the same task asked again."""
    import hashlib

    from dataspace import delivery
    from pods.agent.protocol import read_weights_frame
    from training import downloads
    from training.models import ModelVersion

    def stored() -> ModelVersion:
        from tests.factories import open_request

        version = open_request().versions.get()
        return version

    version = await database_sync_to_async(stored)()
    comm = communicator()
    await handshake(comm, paired_pod, weights_frames=16 << 20)
    assert (await comm.receive_json_from())["type"] == "welcome"
    layer = get_channel_layer()
    task = {"weights_url": "/w", "weights_sha256": version.sha256}
    for message in ({"type": "round.stage", "round": 1, "task": task}, {"type": "round.end"}):
        await layer.group_send(
            delivery.pod_group(paired_pod.pod.pk),
            delivery.wire_event({"type": "pod.send", "message": message}),
        )
    frame = await comm.receive_output(timeout=5)
    found = read_weights_frame(frame["bytes"])
    assert found is not None and found[0] == version.sha256
    assert hashlib.sha256(found[1]).hexdigest() == version.sha256
    assert downloads.cached_weights(version.sha256) == found[1]
    assert (await comm.receive_json_from())["task"] == task
    assert (await comm.receive_json_from())["type"] == "round.end"
    # Asked again on the same connection (the clock's resend): the task alone.
    await layer.group_send(
        delivery.pod_group(paired_pod.pod.pk),
        delivery.wire_event({"type": "pod.send", "message": {"type": "round.stage", "task": task}}),
    )
    assert (await comm.receive_json_from())["task"] == task
    assert await comm.receive_nothing()
    await comm.disconnect()


async def test_a_handshake_that_outlives_the_auth_timeout_stops_where_it_is(
    paired_pod: PairedPod, settings: Any, monkeypatch: Any
) -> None:
    """Seen with 10,000 pods connecting: the token lookup waited longer than the auth timeout,
    the timer closed the connection and the hello handler then sent its challenge on the
    closed socket (an error in the server, and no clean-up)."""
    import time

    from pods import presence

    settings.POD_AUTH_TIMEOUT = 0.2
    lookup = presence.pod_and_expiry_for_bearer

    def slow_lookup(token: str) -> Any:
        time.sleep(0.5)
        return lookup(token)

    monkeypatch.setattr(presence, "pod_and_expiry_for_bearer", slow_lookup)
    comm = communicator()
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": paired_pod.token})
    await expect_close(comm, Close.TIMEOUT)
    assert await comm.receive_nothing(timeout=1.0)  # no challenge after the close
    await comm.wait(timeout=1)


async def test_a_proof_that_outlives_the_auth_timeout_does_not_mark_the_pod_online(
    paired_pod: PairedPod, settings: Any, monkeypatch: Any
) -> None:
    import time

    from pods import live_tokens, presence

    settings.POD_AUTH_TIMEOUT = 1.0  # ample for hello and its challenge, not for the slow check
    paused = presence.owner_paused

    def slow_paused(pod_id: str) -> bool:
        time.sleep(1.5)
        return paused(pod_id)

    monkeypatch.setattr(presence, "owner_paused", slow_paused)
    comm = communicator()
    await comm.connect()
    await comm.send_json_to({"type": "hello", "token": paired_pod.token})
    challenge = await comm.receive_json_from()
    signature = paired_pod.key.sign(
        challenge_message(base64.b64decode(challenge["nonce"]), challenge["pod_id"])
    )
    await comm.send_json_to({"type": "prove", "signature": base64.b64encode(signature).decode()})
    await expect_close(comm, Close.TIMEOUT)
    assert await comm.receive_nothing(timeout=2.0)  # no welcome
    assert await database_sync_to_async(lambda: online_pods().count())() == 0
    assert live_tokens.live_pod(paired_pod.token) is None


async def test_messages_are_dispatched_without_a_thread_hop_each(
    paired_pod: PairedPod, monkeypatch: Any
) -> None:
    """Channels runs close_old_connections in a worker thread before every message; the
    consumers skip it (their database calls do it themselves): heartbeats stay on the loop."""
    import channels.consumer

    hops = []

    async def counted() -> None:
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    comm = communicator()
    await handshake(comm, paired_pod)
    assert (await comm.receive_json_from())["type"] == "welcome"
    for ping in (PING_TEXT, '{"type":"ping"}', PING_TEXT):
        await comm.send_to(text_data=ping)
    assert await comm.receive_nothing(timeout=0.5)
    assert str(paired_pod.pod.pk) in heartbeats.seen  # handled, not answered
    assert hops == []
    await comm.disconnect()
    heartbeats.seen.clear()


@pytest.mark.parametrize("batch", [1, 2, 400])
def test_heartbeats_in_batches_touch_exactly_the_pods_on_their_live_channels(
    transactional_db: Any, monkeypatch: Any, batch: int
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from pods import presence

    monkeypatch.setattr(presence, "SEEN_BATCH", batch)
    pods = [make_paired_pod().pod for _ in range(5)]
    long_ago = timezone.now() - timedelta(hours=1)
    for i, pod in enumerate(pods):
        Pod.objects.filter(pk=pod.pk).update(channel_name=f"live-{i}", last_seen_at=long_ago)
    seen = {str(pod.pk): f"live-{i}" for i, pod in enumerate(pods[:4])}
    seen[str(pods[3].pk)] = "an-old-channel"  # pod 3 reconnected elsewhere since this beat
    Pod.objects.filter(pk=pods[4].pk).update(channel_name="")  # pod 4 is offline:
    seen[str(pods[4].pk)] = ""  # no name matches the rows of offline pods

    assert presence.mark_seen_many(seen) == 3

    after = dict(Pod.objects.values_list("pk", "last_seen_at"))
    assert [after[pod.pk] > long_ago for pod in pods] == [True, True, True, False, False]


async def test_masked_input_frames_are_offered_checked_and_refused_with_a_code(
    paired_pod: PairedPod,
) -> None:
    """The welcome offers binary frames; a frame is a masked input for a round, answered with
    the HTTP upload's error code when refused; a binary frame that is not one closes."""
    from django.conf import settings

    from pods.agent.protocol import masked_frame

    comm = communicator()
    await handshake(comm, paired_pod)
    welcome = await comm.receive_json_from()
    assert welcome["masked_frames"] == settings.POD_MASKED_FRAME_BYTES > 0
    await comm.send_to(bytes_data=masked_frame(999, b"\x00" * 16))
    assert await comm.receive_json_from() == {
        "type": "error",
        "code": "not_in_round",
        "round": 999,
    }
    await comm.send_to(bytes_data=b"not a frame")
    await expect_close(comm, Close.PROTOCOL)
    await comm.disconnect()


async def test_a_binary_frame_before_the_proof_closes(paired_pod: PairedPod) -> None:
    from pods.agent.protocol import masked_frame

    comm = communicator()
    connected, _ = await comm.connect()
    assert connected
    await comm.send_to(bytes_data=masked_frame(1, b"\x00" * 16))
    await expect_close(comm, Close.PROTOCOL)
    await comm.disconnect()
