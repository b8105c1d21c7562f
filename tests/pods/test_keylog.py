"""The pure key-log core (pods.agent.keylog, pods.agent.merkle): RFC 9162 hashing, proofs,
tree heads, verifier.

Trees are checked against a literal transcription of RFC 9162 §2.1.1's recursive MTH; proofs
against tampered logs: a forked head, a removed entry, a substituted key, a wrong size.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pods.agent import keylog, merkle
from pods.agent.keylog import (
    KeyLogError,
    KeyLogVerifier,
    LogEntry,
    TreeHead,
    account_commitment,
    path_to_json,
    sign_tree_head,
    verify_consistency,
    verify_inclusion,
    verify_neighbour_key,
)
from pods.agent.merkle import MerkleTree

SERVICE_KEY = Ed25519PrivateKey.generate()
KID = "test-kid"


def _jwks(key: Ed25519PrivateKey = SERVICE_KEY, kid: str = KID) -> dict[str, object]:
    import base64

    raw = key.public_key().public_bytes_raw()
    x = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid}]}


def reference_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1, word for word (leaves are raw leaf data)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def make_entries(n: int, seed: int = 0) -> list[LogEntry]:
    pseudonym = str(uuid.UUID(int=seed + 1))
    entries = []
    for i in range(n):
        pod_id = str(uuid.UUID(int=(seed << 32) + i + 7))
        entries.append(
            LogEntry(
                index=i,
                pod_id=pod_id,
                account=account_commitment(pseudonym, pod_id),
                public_key=hashlib.sha256(f"key {seed} {i}".encode()).digest(),
                timestamp_ms=1_700_000_000_000 + i,
            )
        )
    return entries


def tree_of(entries: Sequence[LogEntry]) -> MerkleTree:
    return MerkleTree([e.leaf_hash() for e in entries])


def head_of(tree: MerkleTree, size: int | None = None, ts: int = 1) -> TreeHead:
    size = tree.size if size is None else size
    return sign_tree_head(
        SERVICE_KEY, key_id=KID, tree_size=size, root=tree.root(size), timestamp_ms=ts
    )


# -- hashing ---------------------------------------------------------------------------------------


def test_known_vectors() -> None:
    # Given the empty tree and one-leaf trees, when hashed, then the values are RFC 9162's.
    assert MerkleTree().root().hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@given(st.lists(st.binary(max_size=40), max_size=70))
def test_root_matches_rfc_definition(leaves: list[bytes]) -> None:
    tree = MerkleTree([merkle.leaf_hash(x) for x in leaves])
    for size in range(len(leaves) + 1):
        assert tree.root(size) == reference_mth(leaves[:size])


# -- inclusion -------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(size=st.integers(1, 300), data=st.data())
def test_inclusion_proofs_verify_for_any_size_and_leaf(size: int, data: st.DataObject) -> None:
    entries = make_entries(size)
    tree = tree_of(entries)
    index = data.draw(st.integers(0, size - 1))
    tree_size = data.draw(st.integers(index + 1, size))
    path = tree.inclusion_path(index, tree_size)
    verify_inclusion(entries[index].leaf_hash(), index, tree_size, path, tree.root(tree_size))


@settings(max_examples=60)
@given(size=st.integers(2, 200), data=st.data())
def test_inclusion_fails_on_tampered_logs(size: int, data: st.DataObject) -> None:
    entries = make_entries(size)
    tree = tree_of(entries)
    index = data.draw(st.integers(0, size - 1))
    path = tree.inclusion_path(index)
    root = tree.root()
    leaf = entries[index].leaf_hash()

    # Substituted key: same pod, same index, another public key.
    swapped = LogEntry(
        index=index,
        pod_id=entries[index].pod_id,
        account=entries[index].account,
        public_key=os.urandom(32),
        timestamp_ms=entries[index].timestamp_ms,
    )
    with pytest.raises(KeyLogError) as exc:
        verify_inclusion(swapped.leaf_hash(), index, size, path, root)
    assert exc.value.code == "key_not_in_log"

    # Removed entry: the log without it has a different root; the old proof fails against it,
    # and no proof from the shortened log can place the entry at its index.
    shortened = tree_of([e for e in entries if e.index != index])
    with pytest.raises(KeyLogError):
        verify_inclusion(leaf, index, size - 1, path, shortened.root())
    if index < size - 1:
        with pytest.raises(KeyLogError):
            verify_inclusion(
                leaf, index, size - 1, shortened.inclusion_path(index), shortened.root()
            )

    # Wrong size: the same path against the head of a smaller or larger log.
    longer = tree_of([*entries, *make_entries(1, seed=5)])
    for wrong, wrong_root in ((size - 1, tree.root(size - 1)), (size + 1, longer.root())):
        with pytest.raises(KeyLogError):
            verify_inclusion(leaf, index, wrong, path, wrong_root)

    # Wrong index: the entry claimed at another position.
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    with pytest.raises(KeyLogError):
        verify_inclusion(leaf, other, size, path, root)

    # A flipped bit anywhere in the path.
    if path:
        at = data.draw(st.integers(0, len(path) - 1))
        bad = [*path]
        bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
        with pytest.raises(KeyLogError):
            verify_inclusion(leaf, index, size, bad, root)
        with pytest.raises(KeyLogError):
            verify_inclusion(leaf, index, size, path[:-1], root)
        with pytest.raises(KeyLogError):
            verify_inclusion(leaf, index, size, [*path, path[0]], root)


# -- consistency -----------------------------------------------------------------------------------


@settings(max_examples=80)
@given(second=st.integers(1, 300), data=st.data())
def test_consistency_proofs_verify_for_any_sizes(second: int, data: st.DataObject) -> None:
    tree = tree_of(make_entries(second))
    first = data.draw(st.integers(0, second))
    path = tree.consistency_path(first, second)
    verify_consistency(first, second, tree.root(first), tree.root(second), path)


@settings(max_examples=80)
@given(second=st.integers(2, 200), data=st.data())
def test_consistency_fails_on_tampered_logs(second: int, data: st.DataObject) -> None:
    entries = make_entries(second)
    tree = tree_of(entries)
    first = data.draw(st.integers(1, second - 1))
    path = tree.consistency_path(first, second)
    old_root = tree.root(first)

    # Forked head: the new log rewrote an entry the old head already covered.
    victim = data.draw(st.integers(0, first - 1))
    forked = [*entries]
    forked[victim] = LogEntry(
        index=victim,
        pod_id=entries[victim].pod_id,
        account=entries[victim].account,
        public_key=os.urandom(32),
        timestamp_ms=entries[victim].timestamp_ms,
    )
    fork = tree_of(forked)
    with pytest.raises(KeyLogError) as exc:
        verify_consistency(first, second, old_root, fork.root(), fork.consistency_path(first))
    assert exc.value.code == "key_log_inconsistent"
    with pytest.raises(KeyLogError):
        verify_consistency(first, second, old_root, fork.root(), path)

    # Removed entry: the new log dropped one the old head covered.
    removed = tree_of([e for e in entries if e.index != victim])
    if first <= second - 1:
        with pytest.raises(KeyLogError):
            verify_consistency(
                first,
                second - 1,
                old_root,
                removed.root(),
                removed.consistency_path(first, second - 1),
            )

    # Wrong sizes for an honest proof: against the head of a longer log, or from a smaller one.
    longer = tree_of([*entries, *make_entries(1, seed=5)])
    with pytest.raises(KeyLogError):
        verify_consistency(first, second + 1, old_root, longer.root(), path)
    if first > 1:
        with pytest.raises(KeyLogError):
            verify_consistency(first - 1, second, tree.root(first - 1), tree.root(), path)
    # Same size, different root: a fork at equal size.
    with pytest.raises(KeyLogError):
        verify_consistency(second, second, tree.root(), fork.root(), [])
    # A truncated or bit-flipped path.
    with pytest.raises(KeyLogError):
        verify_consistency(first, second, old_root, tree.root(), path[:-1])
    at = data.draw(st.integers(0, len(path) - 1))
    bad = [*path]
    bad[at] = bytes([bad[at][0] ^ 0x80]) + bad[at][1:]
    with pytest.raises(KeyLogError):
        verify_consistency(first, second, old_root, tree.root(), bad)


def test_shrinking_is_never_consistent() -> None:
    tree = tree_of(make_entries(10))
    with pytest.raises(KeyLogError):
        verify_consistency(8, 5, tree.root(8), tree.root(5), tree.consistency_path(5, 8))


# -- entries and heads -----------------------------------------------------------------------------


def test_entry_round_trips_and_rejects_junk() -> None:
    entry = make_entries(3)[2]
    assert LogEntry.from_json(entry.to_json()) == entry
    for junk in (
        {},
        {**entry.to_json(), "public_key": "AAAA"},
        {**entry.to_json(), "index": -1},
        {**entry.to_json(), "index": True},
        {**entry.to_json(), "pod_id": "not-a-uuid"},
        "string",
    ):
        with pytest.raises(KeyLogError) as exc:
            LogEntry.from_json(junk)
        assert exc.value.code == "key_log_malformed"


def test_leaf_encoding_is_fixed_length_and_binds_every_field() -> None:
    entry = make_entries(1)[0]
    assert len(entry.leaf()) == len(keylog.ENTRY_LABEL) + 8 + 16 + 32 + 32 + 8
    variants = [
        LogEntry(1, entry.pod_id, entry.account, entry.public_key, entry.timestamp_ms),
        LogEntry(0, str(uuid.uuid4()), entry.account, entry.public_key, entry.timestamp_ms),
        LogEntry(0, entry.pod_id, os.urandom(32), entry.public_key, entry.timestamp_ms),
        LogEntry(0, entry.pod_id, entry.account, os.urandom(32), entry.timestamp_ms),
        LogEntry(0, entry.pod_id, entry.account, entry.public_key, entry.timestamp_ms + 1),
    ]
    assert len({v.leaf_hash() for v in variants} | {entry.leaf_hash()}) == 6


def test_tree_head_signature_is_checked() -> None:
    tree = tree_of(make_entries(5))
    head = head_of(tree)
    keylog.verify_tree_head(TreeHead.from_json(head.to_json()), _jwks())
    other = Ed25519PrivateKey.generate()
    for bad_jwks in (_jwks(other), _jwks(kid="other"), {}, {"keys": "x"}):
        with pytest.raises(KeyLogError) as exc:
            keylog.verify_tree_head(head, bad_jwks)
        assert exc.value.code == "key_log_bad_head"
    # A head whose size or root was changed after signing.
    for field, value in (("tree_size", 6), ("timestamp", 2)):
        forged = TreeHead.from_json({**head.to_json(), field: value})
        with pytest.raises(KeyLogError):
            keylog.verify_tree_head(forged, _jwks())


# -- the pod's verifier ----------------------------------------------------------------------------


def test_verifier_keeps_head_and_refuses_fork(tmp_path: Path) -> None:
    entries = make_entries(40)
    tree = tree_of(entries)
    verifier = KeyLogVerifier(tmp_path / "keylog.json", _jwks())
    # Given a first head (trusted on first use), persisted with owner-only permissions.
    assert verifier.check_head(head_of(tree, 10), [])
    assert (tmp_path / "keylog.json").stat().st_mode & 0o777 == 0o600
    # When a restarted pod sees a consistent, larger head, then it moves on.
    again = KeyLogVerifier(tmp_path / "keylog.json", _jwks())
    assert again.head is not None and again.head.tree_size == 10
    assert again.check_head(head_of(tree, 25), tree.consistency_path(10, 25))
    assert not again.check_head(head_of(tree, 25, ts=5), [])
    # A forked head at a larger size: entry 3 rewritten.
    forked = [*entries]
    forked[3] = LogEntry(3, entries[3].pod_id, entries[3].account, os.urandom(32), 1)
    fork = tree_of(forked)
    with pytest.raises(KeyLogError) as exc:
        again.check_head(head_of(fork, 30), fork.consistency_path(25, 30))
    assert exc.value.code == "key_log_inconsistent"
    # A forked head at the same size, a rolled-back (smaller) head.
    with pytest.raises(KeyLogError):
        again.check_head(head_of(fork, 25), [])
    with pytest.raises(KeyLogError):
        again.check_head(head_of(tree, 20), [])
    # A head signed by another key.
    impostor = sign_tree_head(
        Ed25519PrivateKey.generate(), key_id=KID, tree_size=40, root=tree.root(), timestamp_ms=3
    )
    with pytest.raises(KeyLogError) as exc:
        again.check_head(impostor, tree.consistency_path(25, 40))
    assert exc.value.code == "key_log_bad_head"
    # Nothing refused was stored.
    stored = KeyLogVerifier(tmp_path / "keylog.json", _jwks()).head
    assert stored is not None and stored.tree_size == 25 and stored.root_hash == tree.root(25)


def test_verifier_members_and_own_entry(tmp_path: Path) -> None:
    entries = make_entries(33)
    tree = tree_of(entries)
    head = head_of(tree)
    verifier = KeyLogVerifier(tmp_path / "keylog.json", _jwks())
    verifier.check_head(head, [])
    verifier.check_member(entries[7], tree.inclusion_path(7), head)
    # Membership only under the head the pod verified (no split view made for it alone).
    smaller = head_of(tree, 20)
    with pytest.raises(KeyLogError):
        verifier.check_member(entries[7], tree.inclusion_path(7, 20), smaller)
    # Own entry: recorded the first time, must stay the same.
    own = entries[12]
    verifier.check_own_entry(
        own, tree.inclusion_path(12), head, pod_id=own.pod_id, public_key=own.public_key
    )
    with pytest.raises(KeyLogError) as exc:
        verifier.check_own_entry(
            own, tree.inclusion_path(12), head, pod_id=own.pod_id, public_key=os.urandom(32)
        )
    assert exc.value.code == "key_log_own_entry_changed"
    # A later entry for our pod id with a substituted key, honestly in the log, is refused.
    substitute = LogEntry(33, own.pod_id, own.account, own.public_key, 99)
    grown = tree_of([*entries, substitute])
    verifier.check_head(head_of(grown), grown.consistency_path(33))
    with pytest.raises(KeyLogError):
        verifier.check_own_entry(
            substitute,
            grown.inclusion_path(33),
            head_of(grown),
            pod_id=own.pod_id,
            public_key=own.public_key,
        )


def test_verify_neighbour_key(tmp_path: Path) -> None:
    entries = make_entries(50, seed=3)
    tree = tree_of(entries[:30])
    verifier = KeyLogVerifier(tmp_path / "keylog.json", _jwks())
    verifier.check_head(head_of(tree), [])
    full = tree_of(entries)
    head = head_of(full).to_json()
    neighbour = entries[41]
    message = {
        "entry": neighbour.to_json(),
        "inclusion_path": path_to_json(full.inclusion_path(41)),
        "head": head,
        "consistency_path": path_to_json(full.consistency_path(30)),
    }
    got = verify_neighbour_key(
        verifier, pod_id=neighbour.pod_id, public_key=neighbour.public_key, **message
    )
    assert got == neighbour
    assert verifier.head is not None and verifier.head.tree_size == 50
    # The service relays another key than the logged one: refused.
    with pytest.raises(KeyLogError) as exc:
        verify_neighbour_key(
            verifier, pod_id=neighbour.pod_id, public_key=os.urandom(32), **message
        )
    assert exc.value.code == "key_not_in_log"
    # An invented neighbour whose entry is not in the log.
    invented = LogEntry(41, neighbour.pod_id, neighbour.account, os.urandom(32), 5)
    with pytest.raises(KeyLogError):
        verify_neighbour_key(
            verifier,
            pod_id=invented.pod_id,
            public_key=invented.public_key,
            **{**message, "entry": invented.to_json()},
        )
    # A neighbour claiming this pod's own person.
    pseudonym = str(uuid.UUID(int=4))  # make_entries(seed=3) uses pseudonym UUID(int=4)
    with pytest.raises(KeyLogError):
        verify_neighbour_key(
            verifier,
            pod_id=neighbour.pod_id,
            public_key=neighbour.public_key,
            owner_pseudonym=pseudonym,
            **message,
        )
    # A fork: the same neighbour in a log where an earlier entry was rewritten.
    forked = [*entries]
    forked[2] = LogEntry(2, entries[2].pod_id, entries[2].account, os.urandom(32), 1)
    fork = tree_of([*forked, *make_entries(5, seed=9)])
    with pytest.raises(KeyLogError) as exc:
        verify_neighbour_key(
            verifier,
            pod_id=neighbour.pod_id,
            public_key=neighbour.public_key,
            entry=neighbour.to_json(),
            inclusion_path=path_to_json(fork.inclusion_path(41)),
            head=head_of(fork).to_json(),
            consistency_path=path_to_json(fork.consistency_path(50)),
        )
    assert exc.value.code == "key_log_inconsistent"


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_verifier_follows_any_growing_log(tmp_path: Path, sizes: list[int]) -> None:
    entries = make_entries(sum(sizes))
    tree = tree_of(entries)
    path = tmp_path / f"keylog-{uuid.uuid4()}.json"
    verifier = KeyLogVerifier(path, _jwks())
    size = 0
    for step in sizes:
        previous, size = size, size + step
        verifier.check_head(head_of(tree, size), tree.consistency_path(previous, size))
        index = size - 1
        verifier.check_member(entries[index], tree.inclusion_path(index, size), head_of(tree, size))


def test_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from pods.key_log_bench import bench_core

    bench_core(64, 3)
    out = capsys.readouterr().out
    assert "inclusion proof: verify" in out and "consistency proof: verify" in out
