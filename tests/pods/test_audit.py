"""``dataspace-pod audit`` against the real service code (in-process WSGI, PostgreSQL).

The pod's HTTP client (``PodService``) talks to the Django application through httpx's WSGI
transport; the log is tampered with in the database as a dishonest operator would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core import signals
from django.db import close_old_connections, connection

from consent import receipts
from dataspace.wsgi import application
from pods import key_log
from pods.agent.audit import audit, verifier_for
from pods.agent.home import PodHome, PodState
from pods.agent.keylog import KeyLogError, LogEntry
from pods.agent.service import PodService
from pods.models import KeyLogEntry, Pod
from pods.services import pod_provision
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keep_test_connection() -> Iterator[None]:
    # As Django's test client does: a request must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


class Device:
    """A pod home provisioned on the service, with an HTTP client into the WSGI app."""

    def __init__(self, path: Path, owner: Any, name: str) -> None:
        self.home = PodHome(path)
        self.pod, access, refresh = pod_provision(
            owner=owner, name=name, public_key=self.home.public_key()
        )
        self.state = PodState(
            server="http://testserver",
            pod_id=str(self.pod.pk),
            name=name,
            access_token=access,
            refresh_token=refresh,
            receipt_keys=receipts.public_jwks(),
        )
        self.home.save_state(self.state)
        self.service = PodService(
            self.home, self.state, transport=httpx.WSGITransport(app=application)
        )

    def audit(self) -> Any:
        return audit(
            self.service,
            verifier_for(self.home.path, self.state.receipt_keys),
            pod_id=self.state.pod_id,
            public_key=self.home.public_key(),
        )


def other_pod(owner: Any, name: str = "Rogue") -> Pod:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return pod_provision(owner=owner, name=name, public_key=key)[0]


def rewrite_log(entries: list[LogEntry]) -> None:
    """What a dishonest operator would do: bypass the row trigger and rewrite history."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE pods_keylogentry")
    for e in entries:
        KeyLogEntry.objects.create(
            index=e.index,
            pod_id=uuid.UUID(e.pod_id),
            account=e.account,
            public_key=e.public_key,
            timestamp_ms=e.timestamp_ms,
            leaf_hash=e.leaf_hash(),
        )
    key_log._cache.clear()


def test_clean_log_passes_and_the_head_is_kept(tmp_path: Path) -> None:
    other_pod(UserFactory())
    ada = UserFactory()
    device = Device(tmp_path / "pod", ada, "Ada's phone")
    report = device.audit()
    assert report.ok and report.own_index == 1 and report.previous_size is None
    assert "key log OK: tree size 2" in report.verdict()
    other_pod(UserFactory())
    again = device.audit()
    assert again.ok and again.previous_size == 2 and again.tree_size == 3
    assert "consistent with the head seen before (size 2)" in again.verdict()


def test_key_the_person_did_not_pair_is_flagged_until_accepted(tmp_path: Path) -> None:
    ada = UserFactory()
    device = Device(tmp_path / "pod", ada, "Ada's phone")
    assert device.audit().ok
    # The service registers a key under Ada's account that Ada never paired.
    rogue = other_pod(ada, "Ada's tablet")
    report = device.audit()
    assert not report.ok
    assert [e["fingerprint"] for e in report.unrecognised] == [rogue.fingerprint]
    assert "KEY LOG PROBLEM: 1 key claims your account" in report.verdict()
    assert rogue.fingerprint in report.verdict()
    # Ada did pair it after all (her other device): she says so, and the audit passes.
    verifier = verifier_for(device.home.path, device.state.receipt_keys)
    verifier.accept_key(rogue.fingerprint)
    assert device.audit().ok


def test_forked_log_is_refused(tmp_path: Path) -> None:
    device = Device(tmp_path / "pod", UserFactory(), "Phone")
    other_pod(UserFactory())
    assert device.audit().ok
    entries = [r.entry for r in KeyLogEntry.objects.order_by("index")]
    # Forked head: entry 1 rewritten (another key), and the log grown past the kept head.
    entries[1] = LogEntry(1, entries[1].pod_id, entries[1].account, b"\x05" * 32, 7)
    rewrite_log(entries)
    other_pod(UserFactory())
    with pytest.raises(KeyLogError) as exc:
        device.audit()
    assert exc.value.code == "key_log_inconsistent"


def test_removed_own_entry_is_refused(tmp_path: Path) -> None:
    other_pod(UserFactory())
    device = Device(tmp_path / "pod", UserFactory(), "Phone")
    assert device.audit().ok
    # The log is rebuilt without this pod's entry; the pod starts over (no head kept).
    (device.home.path / "keylog.json").unlink()
    kept = [r.entry for r in KeyLogEntry.objects.order_by("index") if r.pod_id != device.pod.pk]
    rewrite_log(kept)
    with pytest.raises(KeyLogError) as exc:
        device.audit()
    assert exc.value.code == "key_log_own_entry_changed"


def test_substituted_own_key_is_refused(tmp_path: Path) -> None:
    device = Device(tmp_path / "pod", UserFactory(), "Phone")
    assert device.audit().ok
    (device.home.path / "keylog.json").unlink()
    entries = [r.entry for r in KeyLogEntry.objects.order_by("index")]
    mine = entries[0]
    entries[0] = LogEntry(0, mine.pod_id, mine.account, b"\x09" * 32, mine.timestamp_ms)
    rewrite_log(entries)
    with pytest.raises(KeyLogError) as exc:
        device.audit()
    assert exc.value.code == "key_log_own_entry_changed"


def test_listing_with_an_entry_of_another_account_is_refused(tmp_path: Path) -> None:
    ada, bea = UserFactory(), UserFactory()
    device = Device(tmp_path / "pod", ada, "Phone")
    bea_pod = other_pod(bea)
    # The service lists Bea's pod under Ada's account (its owner swapped behind the log's back).
    Pod.objects.filter(pk=bea_pod.pk).update(owner=ada)
    with pytest.raises(KeyLogError) as exc:
        device.audit()
    assert exc.value.code == "key_log_malformed"


def test_second_entry_for_this_pod_with_another_key_is_flagged(tmp_path: Path) -> None:
    ada = UserFactory()
    device = Device(tmp_path / "pod", ada, "Phone")
    assert device.audit().ok
    # The service logs another key under this pod's id (it would relay that key as ours).
    key_log.key_log_append(pod=Pod(pk=device.pod.pk, owner=ada, public_key=b"\x04" * 32))
    report = device.audit()
    assert not report.ok and report.own_index == 0
    assert [e["index"] for e in report.unrecognised] == [1]
    # Even "accepting" that fingerprint does not make a second key for this pod acceptable.
    verifier_for(device.home.path, device.state.receipt_keys).accept_key(
        report.unrecognised[0]["fingerprint"]
    )
    assert not device.audit().ok
