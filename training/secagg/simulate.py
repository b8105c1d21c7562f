"""Run a whole round in one process: the benchmark and the property tests use this.

Pods listed in ``drop`` vanish before the given stage (they send nothing from then on).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .aggregate import remove_masks, sum_range
from .client import ClientRound, Floors
from .encoding import Layout
from .server import ServerRound
from .wire import Stage


@dataclass
class RoundResult:
    total: npt.NDArray[np.uint32]
    survivors: list[int]
    # Grouped rounds: each group's survivors and its own unmasked sum (one group otherwise).
    groups: list[list[int]] = field(default_factory=list)
    group_totals: list[npt.NDArray[np.uint32]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # each group's place in ``groups=``


def simulate_round(
    inputs: Mapping[int, Mapping[str, npt.NDArray[np.floating]]],
    layout: Layout,
    *,
    drop: Mapping[int, Stage] | None = None,
    threshold_fraction: float = 0.6,
    min_survivors: int = 2,
    seed: int = 0,
    groups: list[list[int]] | None = None,
    floors: Floors | None = None,
) -> RoundResult:
    drop = drop or {}
    identities = {u: Ed25519PrivateKey.generate() for u in inputs}
    server = ServerRound(
        round_id=f"sim-{seed}",
        identity_keys={u: k.public_key().public_bytes_raw() for u, k in identities.items()},
        threshold_fraction=threshold_fraction,
        min_survivors=min_survivors,
        layout=layout,
        seed=seed.to_bytes(8, "big"),
        groups=groups,
    )
    clients = {
        u: ClientRound(k, rng=np.random.default_rng(seed * 1000 + u), floors=floors)
        for u, k in identities.items()
    }

    for u, client in clients.items():
        if _alive(drop, u, Stage.ADVERTISE_KEYS):
            server.receive_advert(u, client.advertise_keys(server.advertise_request(u)))
    server.close_advertise()
    for u in server.adverts:
        if _alive(drop, u, Stage.SHARE_KEYS):
            server.receive_shares(u, clients[u].share_keys(server.share_request(u)))
    server.close_share()
    stored: dict[int, bytes] = {}
    for u in server.shared:
        if _alive(drop, u, Stage.MASKED_INPUT):
            vector = clients[u].masked_input(server.masked_request(u), inputs[u])
            stored[u] = vector.astype("<u4").tobytes()
            server.receive_masked(u)
    server.close_masked()
    for u in server.masked:
        if _alive(drop, u, Stage.CONSISTENCY_CHECK):
            server.receive_consistency(
                u, clients[u].consistency_check(server.consistency_request(u))
            )
    server.close_consistency()
    for u in server.signatures:
        if _alive(drop, u, Stage.UNMASK):
            server.receive_unmask(u, clients[u].unmask(server.unmask_request(u)))
    plan = server.close_unmask()
    group_totals = [
        remove_masks(
            sum_range([io.BytesIO(stored[u]) for u in members], 0, layout.length),
            plan.restricted(members),
        )
        for members in plan.groups
    ]
    total = np.zeros(layout.length, dtype=np.uint32)
    for part in group_totals:
        total += part  # wraps mod 2^32 like the masks
    return RoundResult(
        total=total,
        survivors=plan.survivors,
        groups=plan.groups,
        group_totals=group_totals,
        positions=plan.positions,
    )


def _alive(drop: Mapping[int, Stage], u: int, stage: Stage) -> bool:
    """Whether u still takes part at ``stage`` (it drops *before* its listed stage)."""
    if u not in drop:
        return True
    order = [
        Stage.ADVERTISE_KEYS,
        Stage.SHARE_KEYS,
        Stage.MASKED_INPUT,
        Stage.CONSISTENCY_CHECK,
        Stage.UNMASK,
    ]
    return order.index(stage) < order.index(drop[u])
