"""The service side of the key log on PostgreSQL: appends, append-only storage, proofs, API."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connection, connections
from django.test import Client

from consent import receipts
from consent.models import DataSubject
from pods import key_log
from pods.agent.keylog import (
    KeyLogError,
    LogEntry,
    TreeHead,
    account_commitment,
    path_from_json,
    verify_consistency,
    verify_inclusion,
    verify_tree_head,
)
from pods.models import AppendOnlyError, KeyLogEntry, Pod
from pods.services import pod_provision
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def provision(owner: Any = None, name: str = "Phone") -> tuple[Pod, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    pod, access, _ = pod_provision(owner=owner or UserFactory(), name=name, public_key=public)
    return pod, access


def client_for(token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def test_registering_a_pod_appends_its_key() -> None:
    # Given two people, when three pods are registered, then each key is logged in order.
    ada, bea = UserFactory(), UserFactory()
    pods = [provision(ada)[0], provision(bea)[0], provision(ada)[0]]
    rows = list(KeyLogEntry.objects.order_by("index"))
    assert [r.index for r in rows] == [0, 1, 2]
    assert [r.pod_id for r in rows] == [p.pk for p in pods]
    for row, pod in zip(rows, pods, strict=True):
        pseudonym = str(DataSubject.objects.get(user_id=pod.owner_id).pseudonym)
        assert bytes(row.public_key) == bytes(pod.public_key)
        assert bytes(row.account) == account_commitment(pseudonym, str(pod.pk))
        assert bytes(row.leaf_hash) == row.entry.leaf_hash()
        assert row.fingerprint == pod.fingerprint
    # The same person's pods cannot be linked from the log alone.
    assert bytes(rows[0].account) != bytes(rows[2].account)


def test_entries_cannot_be_changed_or_removed() -> None:
    pod, _ = provision()
    row = KeyLogEntry.objects.get(pod=pod)
    row.public_key = b"\x00" * 32
    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()
    with pytest.raises(AppendOnlyError):
        KeyLogEntry.objects.filter(pk=row.pk).update(public_key=b"\x00" * 32)
    with pytest.raises(AppendOnlyError):
        KeyLogEntry.objects.all().delete()
    # Deleting the person (and so the pod) leaves the entry: history is not rewritten.
    pod.owner.delete()
    assert KeyLogEntry.objects.filter(pk=row.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_database_trigger_refuses_raw_update_and_delete() -> None:
    from django.db import DatabaseError, transaction

    provision()
    for sql in (
        "UPDATE pods_keylogentry SET timestamp_ms = 0",
        "DELETE FROM pods_keylogentry",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert KeyLogEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_get_distinct_contiguous_indexes() -> None:
    # Given 12 pods registered at once from 12 threads (12 database connections),
    # then every index 0..11 is used exactly once.
    owner = UserFactory()
    DataSubject.objects.get_or_create(user=owner)
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def register() -> None:
        try:
            barrier.wait()
            provision(owner)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(KeyLogEntry.objects.values_list("index", flat=True)) == list(range(12))


def test_proofs_verify_and_head_is_signed_with_the_pinned_key() -> None:
    people = [UserFactory() for _ in range(3)]
    for i in range(23):
        provision(people[i % 3])
    view = key_log.key_log_view()
    jwks = receipts.public_jwks()
    head = TreeHead.from_json(key_log.key_log_head())
    verify_tree_head(head, jwks)
    assert head.tree_size == 23 and head.root_hash == view.tree.root()
    for index in range(23):
        proof = key_log.key_log_inclusion(index=index, tree_size=17 if index < 17 else None)
        entry = LogEntry.from_json(proof["entry"])
        sth = TreeHead.from_json(proof["head"])
        verify_tree_head(sth, jwks)
        verify_inclusion(
            entry.leaf_hash(),
            entry.index,
            sth.tree_size,
            path_from_json(proof["inclusion_path"]),
            sth.root_hash,
        )
    for first in range(24):
        proof = key_log.key_log_consistency(first=first)
        older = key_log.key_log_view(tree_size=first).head
        verify_consistency(
            first,
            proof["second"],
            older.root_hash,
            TreeHead.from_json(proof["head"]).root_hash,
            path_from_json(proof["consistency_path"]),
        )


def test_cached_tree_follows_new_entries_and_a_replaced_database() -> None:
    for _ in range(5):
        provision()
    assert key_log.key_log_view().size == 5
    provision()
    view = key_log.key_log_view()
    assert view.size == 6
    leaves = [bytes(h) for h in KeyLogEntry.objects.values_list("leaf_hash", flat=True)]
    from pods.agent.merkle import root_hash

    assert view.tree.root() == root_hash(leaves)


def test_api() -> None:
    ada, bea = UserFactory(), UserFactory()
    ada_pod, ada_token = provision(ada, "Ada's phone")
    provision(bea)
    ada_laptop, _ = provision(ada, "Ada's laptop")
    api = client_for(ada_token)

    head = api.get("/api/v1/pod/key-log/head/")
    assert head.status_code == 200
    assert head.json()["tree_size"] == 3

    by_index = api.get("/api/v1/pod/key-log/entries/1/")
    assert by_index.status_code == 200 and by_index.json()["entry"]["index"] == 1
    by_pod = api.get(f"/api/v1/pod/key-log/pods/{ada_laptop.pk}/?tree_size=3")
    assert by_pod.status_code == 200 and by_pod.json()["entry"]["pod_id"] == str(ada_laptop.pk)

    consistency = api.get("/api/v1/pod/key-log/consistency/?first=1&second=3")
    assert consistency.status_code == 200
    assert consistency.json()["first"] == 1 and consistency.json()["second"] == 3

    mine = api.get("/api/v1/pod/key-log/mine/").json()
    pseudonym = str(DataSubject.objects.get(user=ada).pseudonym)
    assert mine["account"] == pseudonym
    assert [e["entry"]["pod_id"] for e in mine["entries"]] == [str(ada_pod.pk), str(ada_laptop.pk)]
    assert mine["entries"][1]["pod"] == {"name": "Ada's laptop", "status": "active"}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/pod/key-log/entries/9/", 404, "entry_not_found"),
        (f"/api/v1/pod/key-log/pods/{uuid.uuid4()}/", 404, "entry_not_found"),
        ("/api/v1/pod/key-log/entries/0/?tree_size=5", 409, "invalid_tree_size"),
        ("/api/v1/pod/key-log/entries/0/?tree_size=-1", 400, "invalid_value"),
        ("/api/v1/pod/key-log/entries/0/?tree_size=0", 404, "entry_not_found"),
        ("/api/v1/pod/key-log/consistency/", 400, "invalid_value"),
        ("/api/v1/pod/key-log/consistency/?first=x", 400, "invalid_value"),
        ("/api/v1/pod/key-log/consistency/?first=%C2%B2", 400, "invalid_value"),
        ("/api/v1/pod/key-log/consistency/?first=2&second=1", 409, "invalid_tree_size"),
        ("/api/v1/pod/key-log/mine/?tree_size=99999999999999999999", 400, "invalid_value"),
    ],
)
def test_api_refuses_bad_input_with_a_clear_error(path: str, status: int, code: str) -> None:
    _, token = provision()
    response = client_for(token).get(path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_api_needs_a_pod_token() -> None:
    provision()
    assert Client().get("/api/v1/pod/key-log/head/").status_code == 401
    from tests.training.conftest import ProviderFactory
    from training.services import provider_client_issue

    application, _ = provider_client_issue(provider=ProviderFactory())
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import AccessToken

    token = AccessToken.objects.create(
        application=application,
        token="provider-token",
        expires=timezone.now() + timedelta(hours=1),
        scope="requests:read",
    )
    assert client_for(token.token).get("/api/v1/pod/key-log/head/").status_code == 403


def test_schema_documents_the_key_log() -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    paths = response.json()["paths"]
    for path in ("head/", "entries/{index}/", "pods/{pod_id}/", "consistency/", "mine/"):
        assert f"/api/v1/pod/key-log/{path}" in paths


def test_portal_shows_fingerprints_and_log_entries() -> None:

    ada = UserFactory()
    provision()  # someone else's pod: entry 0
    phone, _ = provision(ada, "Ada's phone")
    browser = Client()
    browser.force_login(ada)
    page = browser.get("/pods/").content.decode()
    row = KeyLogEntry.objects.get(pod=phone)
    assert phone.fingerprint in page
    assert f"entry #{row.index}, logged {row.logged_at:%-d %b %Y, %H:%M} UTC" in page
    assert "entry #0" not in page
    assert "not in the key log" not in page


def test_rewritten_history_is_caught_by_a_pod_that_kept_the_head(tmp_path: Any) -> None:
    """A dishonest operator bypasses the row trigger (TRUNCATE) and rewrites the log."""
    from pods.agent.keylog import KeyLogVerifier

    pods = [provision()[0] for _ in range(6)]
    verifier = KeyLogVerifier(tmp_path / "keylog.json", receipts.public_jwks())
    verifier.check_head(TreeHead.from_json(key_log.key_log_head()), [])
    rows = list(KeyLogEntry.objects.order_by("index"))

    def rewrite(entries: list[LogEntry]) -> None:
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
        key_log._cache.clear()  # the service restarts and serves the rewritten log

    # Substituted key for pod 2, plus a new entry so the log looks like it grew.
    entries = [r.entry for r in rows]
    entries[2] = LogEntry(2, entries[2].pod_id, entries[2].account, b"\x07" * 32, 1)
    rewrite(entries)
    provision()
    new = key_log.key_log_consistency(first=6)
    with pytest.raises(KeyLogError) as exc:
        verifier.check_head(
            TreeHead.from_json(new["head"]), path_from_json(new["consistency_path"])
        )
    assert exc.value.code == "key_log_inconsistent"

    # Removed entry: pod 3's entry dropped, later ones renumbered.
    kept = [r.entry for r in rows if r.pod_id != pods[3].pk]
    rewrite(
        [LogEntry(i, e.pod_id, e.account, e.public_key, e.timestamp_ms) for i, e in enumerate(kept)]
    )
    provision()
    provision()
    new = key_log.key_log_consistency(first=6)
    with pytest.raises(KeyLogError):
        verifier.check_head(
            TreeHead.from_json(new["head"]), path_from_json(new["consistency_path"])
        )
    stored = verifier.head
    assert stored is not None and stored.tree_size == 6


def test_round_attachment_lets_a_pod_check_its_neighbours(tmp_path: Any) -> None:
    """What the rounds engine will attach to share_keys, checked as a pod will check it."""
    import base64

    from pods.agent.keylog import KeyLogVerifier
    from pods.agent.neighbours import verify_share_keys_adverts

    ada, bea, cy = UserFactory(), UserFactory(), UserFactory()
    me, _ = provision(ada)
    verifier = KeyLogVerifier(tmp_path / "keylog.json", receipts.public_jwks())
    verifier.check_head(TreeHead.from_json(key_log.key_log_head()), [])  # held since pairing
    neighbours = [provision(bea)[0], provision(cy)[0]]
    ada_second = provision(ada)[0]
    attached = key_log.key_log_for_round(pod_ids=[me.pk, *(p.pk for p in neighbours)])
    assert set(attached.proofs) == {str(me.pk), *(str(p.pk) for p in neighbours)}

    def advert(pod: Pod, key: bytes | None = None) -> dict[str, Any]:
        return {
            "identity_key": base64.b64encode(key or bytes(pod.public_key)).decode(),
            "pod_id": str(pod.pk),
            "key_log": attached.proofs.get(str(pod.pk)),
        }

    message = {
        "key_log": attached.for_pod(known_size=1),
        "adverts": {"2": advert(neighbours[0]), "3": advert(neighbours[1])},
    }
    pseudonym = key_log.owner_pseudonym(ada.pk)
    verified = verify_share_keys_adverts(verifier, message, owner_pseudonym=pseudonym)
    assert {v: e.pod_id for v, e in verified.items()} == {
        "2": str(neighbours[0].pk),
        "3": str(neighbours[1].pk),
    }
    assert verifier.head is not None and verifier.head.tree_size == 4

    # The service swaps a neighbour's identity key for one it holds: refused.
    swapped = {**message, "adverts": {"2": advert(neighbours[0], b"\x01" * 32)}}
    with pytest.raises(KeyLogError) as exc:
        verify_share_keys_adverts(verifier, swapped)
    assert exc.value.code == "key_not_in_log"
    # An invented neighbour with no entry at all: refused.
    ghost = Pod(pk=uuid.uuid4(), public_key=b"\x02" * 32)
    with pytest.raises(KeyLogError):
        verify_share_keys_adverts(verifier, {**message, "adverts": {"4": advert(ghost)}})
    # A neighbour that is another pod of this pod's own person: in the log, but refused.
    own = key_log.key_log_for_round(pod_ids=[ada_second.pk])
    same_person = {
        "key_log": own.for_pod(known_size=4),
        "adverts": {"5": {**advert(ada_second), "key_log": own.proofs[str(ada_second.pk)]}},
    }
    assert verify_share_keys_adverts(verifier, same_person)  # the proof itself is sound
    with pytest.raises(KeyLogError):
        verify_share_keys_adverts(verifier, same_person, owner_pseudonym=pseudonym)


def test_portal_warns_about_a_logged_key_that_is_not_the_pods() -> None:

    ada = UserFactory()
    phone, _ = provision(ada, "Ada's phone")
    # The service logs a second entry for Ada's phone with a key that is not the phone's.
    key_log.key_log_append(pod=Pod(pk=phone.pk, owner=ada, public_key=b"\x03" * 32))
    browser = Client()
    browser.force_login(ada)
    page = browser.get("/pods/").content.decode()
    assert "entry #0, logged" in page and "entry #1, logged" in page
    assert page.count("not this pod&#x27;s key") + page.count("not this pod's key") == 1
