"""Key-log benchmark: proof generation and verification time at N entries (default 10,000).

    python -m pods.key_log_bench [--entries 10000] [--database]

The core figures use ``pods.agent.keylog`` alone (what a pod and the service each pay). With
``--database`` it also times the service path on the configured database: the rows are
inserted in a transaction that is rolled back, so nothing stays behind.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pods.agent.keylog import (
    KeyLogVerifier,
    LogEntry,
    MerkleTree,
    account_commitment,
    path_to_json,
    sign_tree_head,
    verify_consistency,
    verify_inclusion,
    verify_neighbour_key,
)


def _entries(n: int) -> list[LogEntry]:
    pseudonym = str(uuid.uuid4())
    out = []
    for i in range(n):
        pod_id = str(uuid.UUID(int=i + 1))
        out.append(
            LogEntry(
                index=i,
                pod_id=pod_id,
                account=account_commitment(pseudonym, pod_id),
                public_key=hashlib.sha256(i.to_bytes(8, "big")).digest(),
                timestamp_ms=1_700_000_000_000 + i,
            )
        )
    return out


def _time(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds per call."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} µs"


def bench_core(n: int, repeat: int) -> None:
    entries = _entries(n)
    leaves = [e.leaf_hash() for e in entries]
    rng = random.Random(0)
    build = _time(lambda: MerkleTree(leaves), 5)
    tree = MerkleTree(leaves)
    root = tree.root()
    indexes = [rng.randrange(n) for _ in range(repeat)]
    firsts = [rng.randrange(1, n) for _ in range(repeat)]
    paths = {i: tree.inclusion_path(i) for i in indexes}
    cpaths = {m: tree.consistency_path(m) for m in firsts}
    it = iter(range(10**9))

    def pick(seq: list[int]) -> int:
        return seq[next(it) % len(seq)]

    key = Ed25519PrivateKey.generate()
    print(f"key log, {n} entries (pure core, median of {repeat})")
    print(f"  build tree from leaf hashes   {build * 1e3:9.1f} ms")
    print(f"  root hash (cached tree)       {_us(_time(tree.root, repeat))}")
    gen_inclusion = _time(lambda: tree.inclusion_path(pick(indexes)), repeat)
    print(f"  inclusion proof: generate     {_us(gen_inclusion)}")
    print(
        "  inclusion proof: verify       "
        + _us(
            _time(
                lambda: (lambda i: verify_inclusion(leaves[i], i, n, paths[i], root))(
                    pick(indexes)
                ),
                repeat,
            )
        )
    )
    gen_consistency = _time(lambda: tree.consistency_path(pick(firsts)), repeat)
    print(f"  consistency proof: generate   {_us(gen_consistency)}")
    print(
        "  consistency proof: verify     "
        + _us(
            _time(
                lambda: (lambda m: verify_consistency(m, n, tree.root(m), root, cpaths[m]))(
                    pick(firsts)
                ),
                repeat,
            )
        )
    )
    print(
        "  tree head: sign               "
        + _us(
            _time(
                lambda: sign_tree_head(key, key_id="k", tree_size=n, root=root, timestamp_ms=1),
                repeat,
            )
        )
    )
    print(
        f"  proof sizes: inclusion {len(paths[indexes[0]])} hashes, consistency "
        f"{len(cpaths[firsts[0]])} hashes"
    )

    # What a pod pays per neighbour in a round: parse the JSON, check entry and inclusion.
    import base64

    raw = key.public_key().public_bytes_raw()
    jwks = {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": "k",
                "x": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            }
        ]
    }
    head = sign_tree_head(key, key_id="k", tree_size=n, root=root, timestamp_ms=1)
    with TemporaryDirectory() as tmp:
        verifier = KeyLogVerifier(Path(tmp) / "keylog.json", jwks)
        verifier.check_head(head, [])
        messages: dict[int, dict[str, Any]] = {
            i: {
                "entry": entries[i].to_json(),
                "inclusion_path": path_to_json(paths[i]),
                "head": head.to_json(),
            }
            for i in indexes
        }

        def neighbour() -> None:
            i = pick(indexes)
            verify_neighbour_key(
                verifier, pod_id=entries[i].pod_id, public_key=entries[i].public_key, **messages[i]
            )

        per = _time(neighbour, repeat)
        print(f"  pod: verify one neighbour key {_us(per)}  (x16 neighbours: {per * 16e3:.2f} ms)")


def bench_database(n: int, repeat: int) -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataspace.settings")
    django.setup()
    from django.db import connection, transaction

    from pods import key_log
    from pods.models import KeyLogEntry

    class Rollback(Exception):
        pass

    try:
        with transaction.atomic():
            start = KeyLogEntry.objects.count()
            rows = [
                KeyLogEntry(
                    index=start + e.index,
                    pod_id=uuid.UUID(e.pod_id),
                    account=e.account,
                    public_key=e.public_key,
                    timestamp_ms=e.timestamp_ms,
                    leaf_hash=LogEntry(
                        start + e.index, e.pod_id, e.account, e.public_key, e.timestamp_ms
                    ).leaf_hash(),
                )
                for e in _entries(n)
            ]
            KeyLogEntry.objects.bulk_create(rows, batch_size=2000)
            size = start + n

            def cold() -> None:
                key_log._cache.clear()
                key_log.key_log_view()

            rng = random.Random(1)
            print(f"key log on {connection.vendor}, {size} entries (service path, median)")
            print(f"  cold tree (fetch + build)     {_time(cold, 3) * 1e3:9.1f} ms")
            print(f"  signed head (warm)            {_us(_time(key_log.key_log_head, repeat))}")
            print(
                "  inclusion proof + head        "
                + _us(_time(lambda: key_log.key_log_inclusion(index=rng.randrange(size)), repeat))
            )
            print(
                "  consistency proof + head      "
                + _us(
                    _time(lambda: key_log.key_log_consistency(first=rng.randrange(1, size)), repeat)
                )
            )
            raise Rollback
    except Rollback:
        key_log._cache.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=500)
    parser.add_argument(
        "--database", action="store_true", help="also time the service on the configured database"
    )
    args = parser.parse_args()
    bench_core(args.entries, args.repeat)
    if args.database:
        bench_database(args.entries, min(args.repeat, 200))


if __name__ == "__main__":
    main()
