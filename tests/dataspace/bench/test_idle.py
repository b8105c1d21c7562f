"""The idle-connections benchmark's pods: made in bulk, yet real pods a real server accepts."""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.mark.django_db
def test_bulk_pods_are_paired_pods_with_working_tokens_and_key_log_entries() -> None:
    from dataspace.bench.idle import provision_bulk
    from pods.key_log import KeyLogEntry
    from pods.models import Pod
    from pods.presence import pod_and_expiry_for_bearer

    made = provision_bulk(3, "bulk")

    assert len(made) == 3 and len({m["token"] for m in made}) == 3
    for entry in made:
        found = pod_and_expiry_for_bearer(entry["token"])
        assert found is not None
        pod, _expires = found
        assert str(pod.pk) == entry["pod_id"] and pod.simulated and pod.is_active
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(entry["key"]))
        assert key.public_key().public_bytes_raw() == bytes(pod.public_key)
        assert KeyLogEntry.objects.filter(pod=pod, public_key=bytes(pod.public_key)).exists()
    assert Pod.objects.filter(name__startswith="bulk-pod-").count() == 3
    assert pod_and_expiry_for_bearer("not-" + made[0]["token"]) is None


def test_steps_must_increase() -> None:
    from dataspace.bench.idle import parse_steps

    assert parse_steps("1000,5000,10000") == [1000, 5000, 10000]
    for bad in ("", "5000,1000", "0,10", "10,10"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_steps(bad)


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    from dataspace.bench.idle import raise_open_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        now = raise_open_files(100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
        assert now == (hard if hard != resource.RLIM_INFINITY else 256)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_idle_pods_authenticate_heartbeat_and_stay_online(tmp_path: Path) -> None:
    """Against a real server: the generator's pods pass the handshake (token and key proof),
    ping at the interval the welcome gives, and the server counts them online; a pod whose
    token is wrong is refused and retried, never online."""
    from dataspace.bench.idle import Counts, idle_pod, provision_bulk
    from pods.models import Pod
    from pods.presence import online_pods
    from tests.live import on_test_database, wait_for

    made = provision_bulk(3, "idle")
    service = on_test_database(tmp_path, POD_HEARTBEAT_INTERVAL="1").start()
    counts, impostor = Counts(), Counts()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def hold() -> None:
        gate = asyncio.Semaphore(2)
        wrong = {**made[0], "token": "wrong-" + made[0]["token"]}
        tasks = [asyncio.create_task(idle_pod(service.url, m, counts, gate)) for m in made]
        tasks.append(asyncio.create_task(idle_pod(service.url, wrong, impostor, gate)))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    runner = threading.Thread(target=loop.run_until_complete, args=(hold(),))
    try:
        runner.start()
        wait_for(lambda: online_pods().count() == 3, 30, "three pods online")
        wait_for(lambda: counts.pings >= 6, 30, "two heartbeats from each pod")
        assert counts.connected == 3 and counts.failed == 0
        wait_for(lambda: impostor.failed >= 1, 30, "the wrong token refused")
        assert impostor.connected == 0
        first_seen = dict(Pod.objects.values_list("pk", "last_seen_at"))
        time.sleep(6)  # the server writes heartbeats every few seconds
        later = dict(Pod.objects.values_list("pk", "last_seen_at"))
        assert all(later[pk] > first_seen[pk] for pk in later)
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(30)
        loop.close()
        service.stop()
