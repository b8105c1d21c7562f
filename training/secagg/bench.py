"""Benchmark of secure aggregation: one JSON line of timings and the bytes ratio.

    python -m training.secagg.bench --clients 100 --neighbours 16 --dim 1000000 --dropout 0.1

client_mask_s: one pod encodes its update, adds its self mask and K pairwise masks.
server_unmask_s: the server sums N masked inputs (streamed from storage), reconstructs secrets
from shares and removes the self masks of survivors and the survivor–dropped pairwise masks.
*_plain_s: the same without secure aggregation (encode; sum float32 vectors).
bytes_ratio: what one pod sends in a round (keys, shares, masked vector, framing) over the
plain float32 update.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .aggregate import remove_masks, sum_range
from .client import ClientRound
from .encoding import Layout, encode_vector
from .server import ServerRound

FRAMING_BYTES_PER_MESSAGE = 400  # WebSocket frame + JSON envelope, or HTTP request headers


def _parts(rng: np.random.Generator, dim: int) -> dict[str, np.ndarray]:
    return {
        "update": rng.uniform(-0.01, 0.01, dim).astype(np.float32),
        "weight": np.array([20.0]),
        "eval_loss": np.array([3.0]),
        "eval_correct": np.array([15.0]),
        "eval_examples": np.array([20.0]),
    }


def run(
    clients: int, neighbours: int, dim: int, dropout: float, seed: int = 0
) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    layout = Layout.for_training(model_dim=dim, max_clients=clients, clip_norm=1.0, max_weight=100)
    identities = {u: Ed25519PrivateKey.generate() for u in range(1, clients + 1)}
    server = ServerRound(
        round_id="bench",
        identity_keys={u: k.public_key().public_bytes_raw() for u, k in identities.items()},
        threshold_fraction=0.5,
        min_survivors=2,
        layout=layout,
        seed=b"bench",
        k=neighbours,
    )
    pods = {u: ClientRound(k, rng=np.random.default_rng(u)) for u, k in identities.items()}
    sent = {u: 0 for u in pods}
    for u, pod in pods.items():
        reply = pod.advertise_keys(server.advertise_request(u))
        sent[u] += len(json.dumps(reply)) + FRAMING_BYTES_PER_MESSAGE
        server.receive_advert(u, reply)
    server.close_advertise()
    for u, pod in pods.items():
        reply = pod.share_keys(server.share_request(u))
        sent[u] += len(json.dumps(reply)) + FRAMING_BYTES_PER_MESSAGE
        server.receive_shares(u, reply)
    server.close_share()
    dropped = set(rng.choice(list(pods), size=round(dropout * clients), replace=False).tolist())
    stored: dict[int, bytes] = {}
    mask_times: list[float] = []
    for u, pod in pods.items():
        if u in dropped:
            continue
        parts = _parts(rng, dim)
        request = server.masked_request(u)
        started = time.perf_counter()
        vector = pod.masked_input(request, parts)
        mask_times.append(time.perf_counter() - started)
        stored[u] = vector.tobytes()
        sent[u] += len(stored[u]) + FRAMING_BYTES_PER_MESSAGE
        server.receive_masked(u)
    server.close_masked()
    consistency_client: list[float] = []
    consistency_server = 0.0
    for u in server.masked:
        request = server.consistency_request(u)
        began = time.perf_counter()
        reply = pods[u].consistency_check(request)
        consistency_client.append(time.perf_counter() - began)
        sent[u] += len(json.dumps(reply)) + FRAMING_BYTES_PER_MESSAGE
        began = time.perf_counter()
        server.receive_consistency(u, reply)
        consistency_server += time.perf_counter() - began
    began = time.perf_counter()
    server.close_consistency()
    consistency_server += time.perf_counter() - began
    unmask_client: list[float] = []
    for u in server.signatures:
        request = server.unmask_request(u)
        began = time.perf_counter()
        reply = pods[u].unmask(request)
        unmask_client.append(time.perf_counter() - began)
        sent[u] += len(json.dumps(reply)) + FRAMING_BYTES_PER_MESSAGE
        server.receive_unmask(u, reply)

    started = time.perf_counter()
    plan = server.close_unmask()
    total = sum_range([io.BytesIO(stored[u]) for u in plan.survivors], 0, layout.length)
    remove_masks(total, plan)
    server_unmask_s = time.perf_counter() - started

    parts = _parts(rng, dim)
    started = time.perf_counter()
    encode_vector(parts, layout, np.random.default_rng(1))
    client_plain_s = time.perf_counter() - started
    plain = [rng.uniform(-0.01, 0.01, dim).astype(np.float32).tobytes() for _ in plan.survivors]
    started = time.perf_counter()
    acc = np.zeros(dim, dtype=np.float32)
    for blob in plain:
        acc += np.frombuffer(blob, dtype=np.float32)
    server_plain_s = time.perf_counter() - started

    survivors_sent = [sent[u] for u in plan.survivors]
    return {
        "clients": clients,
        "neighbours": server.k,
        "threshold": server.t,
        "dim": dim,
        "dropout": dropout,
        "dropped": len(dropped),
        "client_mask_s": round(statistics.median(mask_times), 4),
        "client_plain_s": round(client_plain_s, 4),
        "server_unmask_s": round(server_unmask_s, 4),
        # ConsistencyCheck: a pod signs the survivor set, then verifies its neighbours'
        # signatures before unmasking; the server verifies every signature once.
        "client_consistency_s": round(
            statistics.median(consistency_client) + statistics.median(unmask_client), 4
        ),
        "server_consistency_s": round(consistency_server, 4),
        "server_plain_s": round(server_plain_s, 4),
        "pairwise_masks_removed": len(plan.pairs),
        "bytes_per_pod": int(statistics.mean(survivors_sent)),
        "plain_update_bytes": 4 * dim,
        "bytes_ratio": round(statistics.mean(survivors_sent) / (4 * dim), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.secagg.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--neighbours", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.clients, args.neighbours, args.dim, args.dropout, args.seed)))


if __name__ == "__main__":
    main()
