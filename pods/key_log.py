"""The service side of the key log: append entries, sign tree heads, serve proofs.

Every pod identity key the service registers is appended here (pairing, provisioning), so no
key can reach a round's neighbourhood without being in the log its owner can audit. The tree
and the proofs are ``pods.agent.keylog`` (RFC 9162 §2.1), shared with the pods that check them;
tree heads are signed with the service key pods pin at pairing (``consent.receipts``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import QuerySet

from consent import receipts
from consent.models import DataSubject
from dataspace.errors import Conflict, NotFound
from pods.agent.keylog import (
    LogEntry,
    MerkleTree,
    TreeHead,
    account_commitment,
    path_to_json,
    sign_tree_head,
)

from .models import KeyLogEntry, Pod

# pg_advisory_xact_lock key: "keylog" in ASCII. Held until commit, so indexes are handed out
# one transaction at a time and commit in index order (no gaps, no duplicates).
_APPEND_LOCK = 0x6B65796C6F67


def _lock_for_append() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_APPEND_LOCK])
    # SQLite (the embedded default) serialises writers by itself; the unique index is the
    # backstop on any database.


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def owner_pseudonym(user_id: int) -> str:
    """The pseudonym that stands for a person in receipts and in their key-log entries."""
    return str(DataSubject.objects.get_or_create(user_id=user_id)[0].pseudonym)


@transaction.atomic
def key_log_append(*, pod: Pod, timestamp_ms: int | None = None) -> KeyLogEntry:
    """Append ``pod``'s identity key to the log, at the next index."""
    _lock_for_append()
    last = KeyLogEntry.objects.order_by("-index").values_list("index", flat=True).first()
    entry = LogEntry(
        index=0 if last is None else last + 1,
        pod_id=str(pod.pk),
        account=account_commitment(owner_pseudonym(pod.owner_id), str(pod.pk)),
        public_key=bytes(pod.public_key),
        timestamp_ms=_now_ms() if timestamp_ms is None else timestamp_ms,
    )
    return KeyLogEntry.objects.create(
        index=entry.index,
        pod=pod,
        account=entry.account,
        public_key=entry.public_key,
        timestamp_ms=entry.timestamp_ms,
        leaf_hash=entry.leaf_hash(),
    )


# -- the tree, cached per process ------------------------------------------------------------------


class _TreeCache:
    """The log's Merkle tree, extended with new leaves instead of rebuilt on every request.

    The log only grows, so a cached prefix stays valid; each read fetches just the rows past
    it, plus the cached last leaf to notice a database that was replaced underneath (test
    teardown, a restore): then the tree is rebuilt from scratch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tree = MerkleTree()

    def snapshot(self) -> tuple[MerkleTree, int]:
        with self._lock:
            tree = self._tree
            size = tree.size
            rows = list(
                KeyLogEntry.objects.filter(index__gte=max(size - 1, 0))
                .order_by("index")
                .values_list("index", "leaf_hash")
            )
            if size:
                if rows and rows[0][0] == size - 1 and bytes(rows[0][1]) == tree.leaf(size - 1):
                    rows = rows[1:]
                else:
                    tree = MerkleTree()
                    rows = list(
                        KeyLogEntry.objects.order_by("index").values_list("index", "leaf_hash")
                    )
            for index, value in rows:
                if index != tree.size:
                    break  # not yet committed below this index; serve the contiguous prefix
                tree.append(bytes(value))
            self._tree = tree
            return tree, tree.size

    def clear(self) -> None:
        with self._lock:
            self._tree = MerkleTree()


_cache = _TreeCache()


@dataclass(frozen=True)
class LogView:
    """The log as of one tree size, with its signed head: every proof in a reply uses one view."""

    tree: MerkleTree
    size: int
    head: TreeHead


def key_log_view(*, tree_size: int | None = None) -> LogView:
    tree, current = _cache.snapshot()
    size = current if tree_size is None else tree_size
    if not 0 <= size <= current:
        raise Conflict(
            f"The key log has {current} entries; tree_size must be between 0 and {current}.",
            code="invalid_tree_size",
            fields={"tree_size": [f"0 to {current}"]},
        )
    head = sign_tree_head(
        receipts.signing_key(),
        key_id=receipts.key_id(),
        tree_size=size,
        root=tree.root(size),
        timestamp_ms=_now_ms(),
    )
    return LogView(tree=tree, size=size, head=head)


def key_log_head() -> dict[str, Any]:
    return key_log_view().head.to_json()


def _proved(view: LogView, row: KeyLogEntry) -> dict[str, Any]:
    return {
        "entry": row.entry.to_json(),
        "inclusion_path": path_to_json(view.tree.inclusion_path(row.index, view.size)),
    }


def key_log_inclusion(
    *, index: int | None = None, pod_id: uuid.UUID | None = None, tree_size: int | None = None
) -> dict[str, Any]:
    """An entry (by index, or a pod's latest) with its inclusion proof under a signed head."""
    view = key_log_view(tree_size=tree_size)
    rows = KeyLogEntry.objects.filter(index__lt=view.size)
    if index is not None:
        rows = rows.filter(index=index)
    if pod_id is not None:
        rows = rows.filter(pod_id=pod_id)
    row = rows.order_by("-index").first()
    if row is None:
        raise NotFound("No such entry in the key log at this tree size.", code="entry_not_found")
    return {"head": view.head.to_json(), **_proved(view, row)}


def key_log_consistency(*, first: int, second: int | None = None) -> dict[str, Any]:
    """RFC 9162 §2.1.4 proof that the log of ``second`` entries extends that of ``first``."""
    view = key_log_view(tree_size=second)
    if not 0 <= first <= view.size:
        raise Conflict(
            f"first must be between 0 and {view.size}.",
            code="invalid_tree_size",
            fields={"first": [f"0 to {view.size}"]},
        )
    return {
        "first": first,
        "second": view.size,
        "head": view.head.to_json(),
        "consistency_path": path_to_json(view.tree.consistency_path(first, view.size)),
    }


@dataclass(frozen=True)
class RoundKeyLog:
    """The key-log proofs for one round stage: one head for everyone, one entry per pod."""

    view: LogView
    proofs: dict[str, dict[str, Any]]

    def for_pod(self, *, known_size: int) -> dict[str, Any]:
        """The message's ``key_log`` part for a pod that holds the head of ``known_size``."""
        first = known_size if 0 <= known_size <= self.view.size else 0
        return {
            "head": self.view.head.to_json(),
            "consistency_path": path_to_json(
                self.view.tree.consistency_path(first, self.view.size)
            ),
        }


def key_log_for_round(*, pod_ids: Iterable[uuid.UUID | str]) -> RoundKeyLog:
    """What the rounds engine attaches to ``share_keys``: each pod's latest entry and its proof.

    A pod with no entry gets none (its neighbours will refuse it: keep it out of cohorts).
    """
    view = key_log_view()
    latest: dict[str, KeyLogEntry] = {}
    rows = KeyLogEntry.objects.filter(pod_id__in=list(pod_ids), index__lt=view.size)
    for row in rows.order_by("index"):
        latest[str(row.pod_id)] = row
    return RoundKeyLog(view=view, proofs={k: _proved(view, row) for k, row in latest.items()})


def key_log_rows_of(user: User | int) -> QuerySet[KeyLogEntry]:
    """Selector: the entries of a person's pods (the portal and ``audit`` list them)."""
    user_id = user if isinstance(user, int) else user.pk
    return KeyLogEntry.objects.filter(pod__owner_id=user_id).select_related("pod")


def key_log_account(*, user_id: int, tree_size: int | None = None) -> dict[str, Any]:
    """Every entry claiming this person's account, each with its inclusion proof."""
    view = key_log_view(tree_size=tree_size)
    rows = key_log_rows_of(user_id).filter(index__lt=view.size).order_by("index")
    return {
        "account": owner_pseudonym(user_id),
        "head": view.head.to_json(),
        "entries": [
            {**_proved(view, row), "pod": {"name": row.pod.name, "status": row.pod.status}}
            for row in rows
        ],
    }
