"""The server's side of a round: route keys and shares, track survivors, plan the unmasking.

The state is plain JSON (``to_dict``/``from_dict``) so the rounds engine can persist it between
stages and any worker can continue it. The server never needs an individual masked vector:
mask removal works on the (sharded) sum.

Rule enforced here and by every pod: for each pod the server asks either for shares of its self
mask seed b (it survived) or of its masking key s_sk (it dropped) — never both, so it can never
unmask an individual input (Bonawitz et al. 2017, section 4).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from . import crypto, graph, shamir
from .aggregate import UnmaskPlan
from .encoding import Layout
from .errors import AbortError, ProtocolError
from .wire import Stage, b64, index_map, unb64

_T = TypeVar("_T")


class ServerRound:
    def __init__(
        self,
        *,
        round_id: str,
        identity_keys: Mapping[int, bytes],
        threshold_fraction: float,
        min_survivors: int,
        layout: Layout,
        seed: bytes | None = None,
        k: int | None = None,
        groups: list[list[int]] | None = None,
    ) -> None:
        indices = sorted(identity_keys)
        if len(indices) < 2:
            raise AbortError("A round needs at least two pods.")
        self.round_id = round_id
        self.identity_keys = dict(identity_keys)
        self.min_survivors = max(2, min_survivors)
        self.layout = layout
        self.graph_seed = seed if seed is not None else os.urandom(16)
        # Valued groups (issue 16): a disjoint Harary graph per group, each with its own k and t.
        self.groups: list[list[int]] = []
        self.group_kt: list[tuple[int, int]] = []
        if groups is not None and len(groups) > 1:
            self.groups = [sorted(g) for g in groups]  # in the caller's order (its labels)
            if sorted(u for g in self.groups for u in g) != indices:
                raise ValueError("the groups must partition the cohort")
            if min(len(g) for g in self.groups) < self.min_survivors:
                raise AbortError("A group is smaller than the plan's minimum.")
            self.neighbours, self.group_kt = graph.grouped_neighbours(
                self.groups, threshold_fraction, self.graph_seed, k
            )
            self.k = min(k_g for k_g, _ in self.group_kt)
            self.t = min(t_g for _, t_g in self.group_kt)
        else:
            self.k = min(k, len(indices) - 1) if k is not None else graph.choose_k(len(indices))
            self.t = graph.choose_t(self.k, threshold_fraction)
            self.neighbours = graph.neighbours(indices, self.k, self.graph_seed)
        self.group_dropped: list[int] = []  # pods of groups that fell below the minimum
        self._position: dict[int, int] = {}
        self.stage = Stage.ADVERTISE_KEYS
        self.adverts: dict[int, dict[str, str]] = {}
        self.routed: dict[int, dict[int, str]] = {}  # receiver -> sender -> envelope (base64)
        self.shared: list[int] = []
        self.masked: list[int] = []
        self.requested: dict[int, str] = {}  # pod -> "b" or "s": fixed once, never both
        self.signatures: dict[int, str] = {}  # pod -> its signature over the survivor set
        self.responses: dict[int, dict[str, dict[int, str]]] = {}

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            "identity_keys": {str(k): b64(v) for k, v in self.identity_keys.items()},
            "min_survivors": self.min_survivors,
            "layout": self.layout.to_dict(),
            "k": self.k,
            "t": self.t,
            "graph_seed": b64(self.graph_seed),
            "neighbours": {str(k): v for k, v in self.neighbours.items()},
            "groups": self.groups,
            "group_kt": [list(kt) for kt in self.group_kt],
            "group_dropped": self.group_dropped,
            "stage": self.stage.value,
            "adverts": {str(k): v for k, v in self.adverts.items()},
            "routed": {str(r): {str(s): e for s, e in m.items()} for r, m in self.routed.items()},
            "shared": self.shared,
            "masked": self.masked,
            "requested": {str(k): v for k, v in self.requested.items()},
            "signatures": {str(k): v for k, v in self.signatures.items()},
            "responses": {
                str(u): {kind: {str(v): s for v, s in shares.items()} for kind, shares in r.items()}
                for u, r in self.responses.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerRound:
        self = cls.__new__(cls)
        self.round_id = data["round_id"]
        self.identity_keys = {
            int(k): unb64(v, "identity_key", size=32) for k, v in data["identity_keys"].items()
        }
        self.min_survivors = int(data["min_survivors"])
        self.layout = Layout.from_dict(data["layout"])
        self.k, self.t = int(data["k"]), int(data["t"])
        self.graph_seed = unb64(data["graph_seed"], "graph_seed")
        self.neighbours = {int(k): [int(x) for x in v] for k, v in data["neighbours"].items()}
        self.groups = [[int(u) for u in g] for g in data.get("groups", [])]
        self.group_kt = [(int(k_g), int(t_g)) for k_g, t_g in data.get("group_kt", [])]
        self.group_dropped = [int(u) for u in data.get("group_dropped", [])]
        self._position = {}
        self.stage = Stage(data["stage"])
        self.adverts = {int(k): dict(v) for k, v in data["adverts"].items()}
        self.routed = {int(r): {int(s): e for s, e in m.items()} for r, m in data["routed"].items()}
        self.shared = [int(x) for x in data["shared"]]
        self.masked = [int(x) for x in data["masked"]]
        self.requested = {int(k): str(v) for k, v in data["requested"].items()}
        self.signatures = {int(k): str(v) for k, v in data.get("signatures", {}).items()}
        self.responses = {
            int(u): {kind: {int(v): s for v, s in shares.items()} for kind, shares in r.items()}
            for u, r in data["responses"].items()
        }
        return self

    # -- helpers ------------------------------------------------------------------------------

    @property
    def indices(self) -> list[int]:
        """The cohort, sorted (one list, not to be modified: the cohort never changes)."""
        return self._memo("indices", (), lambda: sorted(self.identity_keys))

    def _memo(self, name: str, of: tuple[list[int], ...], make: Callable[[], _T]) -> _T:
        """A value every pod's request (or answer) of a stage shares, made once, not per pod
        (several were O(n): O(n²) for the cohort); made again if a list ``of`` changed."""
        key = (name, self.stage, *((id(x), len(x)) for x in of))
        memos: dict[str, tuple[object, Any]] = self.__dict__.setdefault("_memos", {})
        if name not in memos or memos[name][0] != key:
            memos[name] = (key, make())
        return cast(_T, memos[name][1])

    def _require(self, stage: Stage) -> None:
        if self.stage is not stage:
            raise ProtocolError(
                f"The round is at {self.stage.value}, not {stage.value}.", code="out_of_order"
            )

    def _abort(self, message: str) -> AbortError:
        self.stage = Stage.ABORTED
        return AbortError(message)

    def group_of(self, u: int) -> int | None:
        """The position of u's group (None: the round is not grouped)."""
        if len(self._position) != sum(len(g) for g in self.groups):
            self._position = {v: p for p, g in enumerate(self.groups) for v in g}
        return self._position.get(u)

    def threshold_of(self, u: int) -> int:
        position = self.group_of(u)
        return self.t if position is None else self.group_kt[position][1]

    def survivor_groups(self, survivors: list[int]) -> list[tuple[int, list[int]]]:
        """Each group's position and survivors, for groups with any (one group of all of them
        when the round is not grouped)."""
        if not self.groups:
            return [(0, sorted(survivors))]
        alive = set(survivors)
        return [(p, sorted(alive & set(g))) for p, g in enumerate(self.groups) if alive & set(g)]

    def _check_survivors(self, survivors: list[int], what: str) -> None:
        if len(survivors) < self.min_survivors:
            raise self._abort(
                f"Only {len(survivors)} pods {what}; {self.min_survivors} are needed."
            )

    # -- stage 1: AdvertiseKeys ---------------------------------------------------------------

    def advertise_request(self, u: int) -> dict[str, Any]:
        return {
            "stage": Stage.ADVERTISE_KEYS.value,
            "round_id": self.round_id,
            "index": u,
            "neighbours": self.neighbours[u],
            "threshold": self.threshold_of(u),
            "layout": self._memo("layout", (), self.layout.to_dict),
            "graph": self.graph_of(u),
            **({"group": self.groups[p]} if (p := self.group_of(u)) is not None else {}),
        }

    def graph_of(self, u: int) -> dict[str, Any]:
        """How u's neighbours were drawn — the members of its graph (the cohort, or its group),
        the ring seed and k — so that the pod can recompute its neighbourhood: a Harary ring on
        the stated members is connected, so no smaller piece of it can be unmasked alone."""
        position = self.group_of(u)
        if position is None:
            seed = self._memo("seed", (), lambda: b64(self.graph_seed))
            return {"members": self.indices, "seed": seed, "k": self.k}
        return {
            "members": self.groups[position],
            "seed": b64(self.graph_seed + position.to_bytes(2, "big")),
            "k": self.group_kt[position][0],
        }

    def receive_advert(self, u: int, reply: Mapping[str, Any]) -> None:
        """Check the pod's keys are signed by its registered identity key, then keep them."""
        self._require(Stage.ADVERTISE_KEYS)
        if u not in self.identity_keys or u in self.adverts:
            raise ProtocolError("Unexpected or repeated advertisement.", code="unexpected_reply")
        c_pk = unb64(reply.get("c_pk"), "c_pk", size=32)
        s_pk = unb64(reply.get("s_pk"), "s_pk", size=32)
        signature = unb64(reply.get("signature"), "signature", size=64)
        crypto.verify_advert(
            self.identity_keys[u], signature, self.round_id.encode(), u, c_pk, s_pk
        )
        self.adverts[u] = {"c_pk": b64(c_pk), "s_pk": b64(s_pk), "signature": b64(signature)}

    def close_advertise(self) -> list[int]:
        self._require(Stage.ADVERTISE_KEYS)
        survivors = [u for u in self.indices if u in self.adverts]
        self._check_survivors(survivors, "advertised keys")
        self.stage = Stage.SHARE_KEYS
        return survivors

    def share_request(self, u: int) -> dict[str, Any]:
        adverts = {
            str(v): {**self.adverts[v], "identity_key": b64(self.identity_keys[v])}
            for v in self.neighbours[u]
            if v in self.adverts
        }
        return {"stage": Stage.SHARE_KEYS.value, "adverts": adverts}

    # -- stage 2: ShareKeys -------------------------------------------------------------------

    def receive_shares(self, u: int, reply: Mapping[str, Any]) -> None:
        self._require(Stage.SHARE_KEYS)
        if u not in self.adverts or u in self.shared:
            raise ProtocolError("Unexpected or repeated shares.", code="unexpected_reply")
        shares = index_map(reply.get("shares"), "shares")
        expected = {v for v in self.neighbours[u] if v in self.adverts}
        if set(shares) != expected:
            raise ProtocolError(
                "Shares must go to exactly the advertised neighbours.", code="wrong_receivers"
            )
        for v, envelope in shares.items():
            unb64(envelope, "share", max_size=512)
            self.routed.setdefault(v, {})[u] = str(envelope)
        self.shared.append(u)

    def close_share(self) -> list[int]:
        self._require(Stage.SHARE_KEYS)
        self.shared.sort()
        self._check_survivors(self.shared, "shared keys")
        self.stage = Stage.MASKED_INPUT
        return list(self.shared)

    def _shared_set(self) -> frozenset[int]:
        return self._memo("shared", (self.shared,), lambda: frozenset(self.shared))

    def _masked_set(self) -> frozenset[int]:
        return self._memo("masked", (self.masked,), lambda: frozenset(self.masked))

    def masked_request(self, u: int) -> dict[str, Any]:
        shared = self._shared_set()
        envelopes = {str(v): e for v, e in self.routed.get(u, {}).items() if v in shared}
        return {"stage": Stage.MASKED_INPUT.value, "shares": envelopes}

    def forget_routed(self) -> None:
        """Drop the relayed envelopes when the masked-input stage closes: nothing later needs
        them, and they are most of the persisted state (O(n·k) ciphertexts)."""
        self._require(Stage.MASKED_INPUT)
        self.routed = {}

    # -- stage 3: MaskedInput -----------------------------------------------------------------

    def receive_masked(self, u: int) -> None:
        """Record that u's masked vector was stored (the vector itself stays in storage)."""
        self._require(Stage.MASKED_INPUT)
        if u not in self._shared_set() or u in self.masked:
            raise ProtocolError("Unexpected or repeated masked input.", code="unexpected_reply")
        self.masked.append(u)

    def close_masked(self) -> list[int]:
        self._require(Stage.MASKED_INPUT)
        self.masked.sort()
        if self.groups:
            # A group whose inputs fell below the plan's minimum is left out whole: its inputs
            # are not summed (their masks, all inside the group, never need removing) and the
            # other groups go on. Its pods are never asked to unmask.
            small = [g for _, g in self.survivor_groups(self.masked) if len(g) < self.min_survivors]
            self.group_dropped = sorted(u for g in small for u in g)
            self.masked = [u for u in self.masked if u not in set(self.group_dropped)]
        self._check_survivors(self.masked, "sent masked inputs")
        masked = set(self.masked)
        for v in self.shared:
            self.requested[v] = "b" if v in masked else "s"
        self.stage = Stage.CONSISTENCY_CHECK
        return list(self.masked)

    # -- stage 3½: ConsistencyCheck (Bonawitz et al. 2017, round 3) ---------------------------

    def consistency_request(self, u: int) -> dict[str, Any]:
        """Every survivor is shown the same survivor set, to sign."""
        return {
            "stage": Stage.CONSISTENCY_CHECK.value,
            "survivors": self._memo("survivors", (self.masked,), lambda: list(self.masked)),
        }

    def receive_consistency(self, u: int, reply: Mapping[str, Any]) -> None:
        self._require(Stage.CONSISTENCY_CHECK)
        if u not in self._masked_set() or u in self.signatures:
            raise ProtocolError("Unexpected or repeated signature.", code="unexpected_reply")
        signature = unb64(reply.get("signature"), "signature", size=64)
        message = self._memo(
            "signed",
            (self.masked,),
            lambda: crypto.survivors_message(self.round_id.encode(), self.masked),
        )
        crypto.verify_survivors_message(self.identity_keys[u], signature, message)
        self.signatures[u] = b64(signature)

    def close_consistency(self) -> list[int]:
        """The pods that signed go on to unmask; a pod that did not is still in the sum."""
        self._require(Stage.CONSISTENCY_CHECK)
        signed = sorted(self.signatures)
        self._check_survivors(signed, "signed the survivor set")
        self.stage = Stage.UNMASK
        return signed

    def unmask_request(self, u: int) -> dict[str, Any]:
        shared, masked = self._shared_set(), self._masked_set()
        mine = [v for v in self.neighbours[u] if v in shared]
        return {
            "stage": Stage.UNMASK.value,
            "alive": [v for v in mine if v in masked],
            "dropped": [v for v in mine if v not in masked],
            "signatures": {str(v): self.signatures[v] for v in mine if v in self.signatures},
        }

    # -- stage 4: Unmask ----------------------------------------------------------------------

    def receive_unmask(self, u: int, reply: Mapping[str, Any]) -> None:
        self._require(Stage.UNMASK)
        if u not in self.signatures or u in self.responses:
            raise ProtocolError("Unexpected or repeated unmask reply.", code="unexpected_reply")
        request = self.unmask_request(u)
        b_shares = index_map(reply.get("b_shares"), "b_shares")
        s_shares = index_map(reply.get("s_shares"), "s_shares")
        for kind, shares, allowed in (
            ("b", b_shares, request["alive"]),
            ("s", s_shares, request["dropped"]),
        ):
            for v, value in shares.items():
                if self.requested.get(v) != kind or v not in allowed:
                    # Accepting it could give the server both kinds of one pod's secrets.
                    raise ProtocolError("A share of the wrong kind was sent.", code="both_shares")
                shamir.share_from_bytes(unb64(value, "share", size=66))
        self.responses[u] = {
            "b": {v: str(s) for v, s in b_shares.items()},
            "s": {v: str(s) for v, s in s_shares.items()},
        }

    def close_unmask(self) -> UnmaskPlan:
        """Reconstruct b for survivors and s_sk for dropped pods, or abort revealing nothing."""
        self._require(Stage.UNMASK)
        collected: dict[tuple[str, int], dict[int, int]] = {}
        for holder, reply in self.responses.items():
            for kind, shares in reply.items():
                for v, value in shares.items():
                    collected.setdefault((kind, v), {})[holder] = shamir.share_from_bytes(
                        unb64(value, "share", size=66)
                    )
        masked = set(self.masked)
        b_seeds: dict[int, bytes] = {}
        dropped_keys: dict[int, bytes] = {}
        pairs: list[tuple[int, int, bytes]] = []
        failed: set[int] = set()  # positions of groups that cannot be unmasked
        for v in self.shared:
            if v in self.group_dropped:
                continue  # its whole group was left out: none of its masks is in a sum
            kind = self.requested[v]
            points = collected.get((kind, v), {})
            involved = kind == "b" or any(u in masked for u in self.neighbours[v])
            if not involved:
                continue
            t = self.threshold_of(v)
            if len(points) < t:
                position = self.group_of(v)
                if position is None:
                    raise self._abort(f"Too few shares to unmask ({len(points)} of {t} needed).")
                failed.add(position)
                continue
            subset = dict(sorted(points.items())[:t])
            secret = shamir.combine(subset)
            if kind == "b":
                b_seeds[v] = secret
            else:
                dropped_keys[v] = secret
                for u in self.neighbours[v]:
                    if u in masked:
                        pairs.append((u, v, unb64(self.adverts[u]["s_pk"], "s_pk", size=32)))
        # A group that cannot be unmasked is left out of the sum (grouped rounds only).
        out = {u for position in failed for u in self.groups[position]}
        survivors = [u for u in self.masked if u not in out]
        if out:
            self._check_survivors(survivors, "can be unmasked")
        self.stage = Stage.DONE
        return UnmaskPlan(
            round_id=self.round_id.encode(),
            survivors=survivors,
            b_seeds={u: b for u, b in b_seeds.items() if u not in out},
            dropped_keys={v: s for v, s in dropped_keys.items() if v not in out},
            pairs=[(u, v, pk) for u, v, pk in pairs if u not in out],
            groups=[g for _, g in self.survivor_groups(survivors)],
            positions=[p for p, _ in self.survivor_groups(survivors)],
        )
