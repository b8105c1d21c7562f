"""The pod's side of a round, as a state machine: each stage method takes the server's message,
checks it completely, and returns the reply. Out-of-order calls are refused.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import crypto, graph, shamir
from .encoding import Layout, encode_vector
from .errors import AbortError, CryptoError, FloorError, ProtocolError, SurvivorsBelowFloor
from .prg import apply_masks
from .wire import Stage, b64, expect_stage, index, index_list, index_map, unb64

ENVELOPE = struct.Struct(">II66s66s")


@dataclass(frozen=True)
class Floors:
    """The least protection a pod accepts, whatever the service says: the smallest
    neighbourhood, the threshold fraction of it, and an absolute threshold floor. The pod agent
    derives them from the plan its owner consented to (``pods.agent.plan``)."""

    min_neighbours: int = 2
    threshold_fraction: float = 0.5
    min_threshold: int = 2
    # The plan's minimum participants: no sum the pod's input is in may cover fewer pods.
    min_survivors: int = 2
    # Whether the plan values groups (issue 16): only then may a round split its cohort.
    grouped: bool = False

    def check_group(self, me: int, neighbours: list[int], group: list[int] | None) -> None:
        """A grouped round: the plan allows groups, my group holds me and every neighbour (so
        my masks stay inside the group whose sum is revealed), and it is not below the plan's
        minimum."""
        if group is None:
            return
        if not self.grouped:
            raise FloorError(
                "The plan does not split cohorts into groups.", code="groups_not_in_plan"
            )
        if me not in group or not set(neighbours) <= set(group):
            raise FloorError("A neighbour outside my group.", code="neighbour_outside_group")
        if len(set(group)) < self.min_survivors:
            raise FloorError(
                f"A group of {len(set(group))} is below the plan's {self.min_survivors}.",
                code="group_below_plan",
            )

    def check_graph(
        self, me: int, neighbours: list[int], group: list[int] | None, stated: Any
    ) -> None:
        """My neighbourhood is the one a Harary graph on the stated members (my group's, or the
        cohort's) and seed gives me, and those members are at least the plan's minimum: a
        ring on them is connected, so the service cannot cut a smaller piece out of it
        without changing what it shows each pod (SecAgg+ graph, Bell et al. 2020)."""
        if not isinstance(stated, Mapping):
            raise FloorError("The neighbour graph is not stated.", code="graph_not_stated")
        members = index_list(stated.get("members"), "graph.members")
        seed = unb64(stated.get("seed"), "graph.seed", max_size=64)
        k = index(stated.get("k"), "graph.k")
        if me not in members or (group is not None and sorted(members) != sorted(group)):
            raise FloorError("The graph's members are not as stated.", code="graph_not_as_stated")
        if len(members) < self.min_survivors:
            raise FloorError(
                f"A graph of {len(members)} pods is below the plan's {self.min_survivors}.",
                code="graph_below_plan",
            )
        try:
            expected = graph.neighbours_of(members, k, seed, me)
        except ValueError:
            raise FloorError("The graph is not as stated.", code="graph_not_as_stated") from None
        if sorted(neighbours) != expected:
            raise FloorError("The graph is not as stated.", code="graph_not_as_stated")

    def check_survivors(
        self, survivors: list[int], group: list[int] | None, members: list[int] | None = None
    ) -> None:
        """The sum my input is in (my group's, or the cohort's) covers at least the plan's
        minimum number of pods — counting only pods of my graph's stated members (an index
        outside them was never in the round: listing it covers no one)."""
        covered = set(survivors) & set(group) if group is not None else set(survivors)
        if members is not None:
            covered &= set(members)
        if len(covered) < self.min_survivors:
            raise FloorError(
                f"The sum would cover {len(covered)} pods; the plan needs {self.min_survivors}.",
                code="group_survivors_below_plan" if group is not None else "survivors_below_plan",
            )

    def check_neighbourhood(self, neighbours: int, threshold: int) -> None:
        if neighbours < self.min_neighbours:
            raise FloorError(
                f"A neighbourhood of {neighbours} is below the plan's {self.min_neighbours}.",
                code="neighbourhood_below_plan",
            )
        least = max(self.min_threshold, graph.choose_t(neighbours, self.threshold_fraction))
        if threshold < least:
            raise FloorError(
                f"A threshold of {threshold} is below the plan's {least}.",
                code="threshold_below_plan",
            )


def check_advertise(
    floors: Floors, message: Mapping[str, Any]
) -> tuple[str, int, list[int], int, list[int] | None]:
    """The neighbourhood an ``advertise_keys`` message gives, checked completely against the
    floors: the round id, my index, my neighbours, the threshold and my group. Cheap, and all a
    plan-level decline needs, so a pod runs it before its (slow) training, and again when it
    advertises."""
    m = expect_stage(message, Stage.ADVERTISE_KEYS)
    round_id = m.get("round_id")
    if not isinstance(round_id, str) or not 1 <= len(round_id) <= 128:
        raise ProtocolError("round_id must be a short text.", code="malformed_message")
    me = index(m.get("index"), "index")
    neighbours = index_list(m.get("neighbours"), "neighbours")
    if me in neighbours or not neighbours:
        raise ProtocolError("Invalid neighbourhood.", code="malformed_message")
    threshold = index(m.get("threshold"), "threshold")
    if not len(neighbours) // 2 + 1 <= threshold <= len(neighbours):
        raise ProtocolError(
            "The threshold must be a majority of the neighbourhood.", code="malformed_message"
        )
    floors.check_neighbourhood(len(neighbours), threshold)
    group = index_list(m["group"], "group") if m.get("group") is not None else None
    floors.check_group(me, neighbours, group)
    floors.check_graph(me, neighbours, group, m.get("graph"))
    return round_id, me, neighbours, threshold, group


@dataclass
class _Secrets:
    c_sk: X25519PrivateKey = field(repr=False)
    s_sk: X25519PrivateKey = field(repr=False)
    b_seed: bytes = field(repr=False, default=b"")
    # v -> the envelope key shared with v: derived when sealing, reused when opening
    envelope_keys: dict[int, bytes] = field(repr=False, default_factory=dict)


class ClientRound:
    """One pod in one round. Holds secrets in memory only; its repr shows none of them."""

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        *,
        rng: np.random.Generator | None = None,
        floors: Floors | None = None,
    ) -> None:
        self._identity = identity
        self.floors = floors or Floors()
        self._rng = rng or np.random.default_rng(int.from_bytes(os.urandom(8), "big"))
        self.stage = Stage.ADVERTISE_KEYS
        self.round_id = b""
        self.index = 0
        self.neighbours: list[int] = []
        self.threshold = 0
        self.layout: Layout | None = None
        self._secrets: _Secrets | None = None
        self._adverts: dict[int, tuple[bytes, bytes]] = {}  # v -> (c_pk, s_pk)
        self._held: dict[int, tuple[int, int]] = {}  # v -> (b share, s share) that v gave us
        self._maskers: list[int] = []  # neighbours we masked with (finished ShareKeys)
        self._identities: dict[int, bytes] = {}  # v -> v's identity key (from its advert)
        self._survivors: list[int] = []  # the survivor set this pod signed
        self.group: list[int] | None = None  # my valued group's members (grouped rounds)
        self.members: list[int] | None = None  # the stated graph's members (cohort or group)

    def __repr__(self) -> str:
        return f"ClientRound(index={self.index}, stage={self.stage.value})"

    def _require(self, stage: Stage) -> None:
        if self.stage is not stage:
            raise ProtocolError(
                f"Not expecting {stage.value} now ({self.stage.value}).", code="out_of_order"
            )

    def _abort(self, message: str) -> AbortError:
        self.stage = Stage.ABORTED
        return AbortError(message)

    # Stage 1 -------------------------------------------------------------------------------------

    def advertise_keys(self, message: Mapping[str, Any]) -> dict[str, Any]:
        self._require(Stage.ADVERTISE_KEYS)
        m = expect_stage(message, Stage.ADVERTISE_KEYS)
        round_id, me, neighbours, threshold, group = check_advertise(self.floors, m)
        self.group = sorted(set(group)) if group is not None else None
        self.members = sorted(index_list(m["graph"]["members"], "graph.members"))
        layout = m.get("layout")
        if not isinstance(layout, dict):
            raise ProtocolError("layout is required.", code="malformed_message")
        try:
            self.layout = Layout.from_dict(layout)
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("layout is malformed.", code="malformed_message") from None
        self.round_id, self.index = round_id.encode("utf-8"), me
        self.neighbours, self.threshold = sorted(neighbours), threshold
        self._secrets = _Secrets(c_sk=X25519PrivateKey.generate(), s_sk=X25519PrivateKey.generate())
        c_pk = crypto.x25519_public(self._secrets.c_sk)
        s_pk = crypto.x25519_public(self._secrets.s_sk)
        signature = crypto.sign_advert(self._identity, self.round_id, me, c_pk, s_pk)
        self.stage = Stage.SHARE_KEYS
        return {"c_pk": b64(c_pk), "s_pk": b64(s_pk), "signature": b64(signature)}

    # Stage 2 -------------------------------------------------------------------------------------

    def share_keys(self, message: Mapping[str, Any]) -> dict[str, Any]:
        self._require(Stage.SHARE_KEYS)
        assert self._secrets is not None
        adverts = index_map(expect_stage(message, Stage.SHARE_KEYS).get("adverts"), "adverts")
        if not set(adverts) <= set(self.neighbours):
            raise ProtocolError(
                "Adverts from pods outside my neighbourhood.", code="not_a_neighbour"
            )
        for v, advert in adverts.items():
            if not isinstance(advert, Mapping):
                raise ProtocolError("An advert must be an object.", code="malformed_message")
            c_pk = unb64(advert.get("c_pk"), "c_pk", size=32)
            s_pk = unb64(advert.get("s_pk"), "s_pk", size=32)
            signature = unb64(advert.get("signature"), "signature", size=64)
            identity_key = unb64(advert.get("identity_key"), "identity_key", size=32)
            crypto.verify_advert(identity_key, signature, self.round_id, v, c_pk, s_pk)
            self._adverts[v] = (c_pk, s_pk)
            self._identities[v] = identity_key
        if len(self._adverts) < self.threshold:
            raise self._abort("Too few neighbours advertised keys.")
        self._secrets.b_seed = os.urandom(32)
        holders = sorted(self._adverts)
        b_shares = shamir.split(self._secrets.b_seed, self.threshold, holders)
        s_shares = shamir.split(self._secrets.s_sk.private_bytes_raw(), self.threshold, holders)
        out: dict[str, str] = {}
        for v in holders:
            plaintext = ENVELOPE.pack(
                self.index, v, shamir.share_bytes(b_shares[v]), shamir.share_bytes(s_shares[v])
            )
            key = crypto.envelope_key(self._secrets.c_sk, self._adverts[v][0], self.round_id)
            self._secrets.envelope_keys[v] = key
            out[str(v)] = b64(crypto.seal(key, self.round_id, self.index, v, plaintext))
        self.stage = Stage.MASKED_INPUT
        return {"shares": out}

    # Stage 3 -------------------------------------------------------------------------------------

    def masked_input(
        self, message: Mapping[str, Any], parts: Mapping[str, npt.NDArray[np.floating]]
    ) -> npt.NDArray[np.uint32]:
        """Decrypt the shares neighbours sent us, then encode and mask our input."""
        self._require(Stage.MASKED_INPUT)
        assert self._secrets is not None and self.layout is not None
        envelopes = index_map(expect_stage(message, Stage.MASKED_INPUT).get("shares"), "shares")
        if not set(envelopes) <= set(self._adverts):
            raise ProtocolError(
                "Shares from pods that did not advertise to me.", code="not_a_neighbour"
            )
        for v, value in envelopes.items():
            plaintext = crypto.open_sealed(
                self._secrets.envelope_keys[v],
                self.round_id,
                v,
                self.index,
                unb64(value, "share", max_size=512),
            )
            if len(plaintext) != ENVELOPE.size:
                raise CryptoError()
            sender, receiver, b_share, s_share = ENVELOPE.unpack(plaintext)
            if sender != v or receiver != self.index:
                raise CryptoError()
            self._held[v] = (shamir.share_from_bytes(b_share), shamir.share_from_bytes(s_share))
        if len(self._held) < self.threshold:
            raise self._abort("Too few neighbours finished sharing keys.")
        self._maskers = sorted(self._held)
        vector = encode_vector(dict(parts), self.layout, self._rng)
        add = [crypto.self_mask_key(self._secrets.b_seed, self.round_id, self.index)]
        subtract: list[bytes] = []
        for v in self._maskers:
            shared = crypto.agree(self._secrets.s_sk, self._adverts[v][1])
            # The pair's mask cancels in the sum: the lower index adds it, the higher subtracts.
            (add if self.index < v else subtract).append(
                crypto.mask_key(shared, self.round_id, self.index, v)
            )
        apply_masks(vector, add=add, subtract=subtract)
        self.stage = Stage.CONSISTENCY_CHECK
        return vector

    # Stage 3½: ConsistencyCheck (Bonawitz et al. 2017, round 3) ----------------------------------

    def consistency_check(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Sign the survivor set the server shows, once. Shares are revealed later only against
        at least t neighbours' signatures over this same set, so a server that tells some
        neighbours "v survived" and others "v dropped" cannot collect both kinds of v's shares
        from honest pods."""
        self._require(Stage.CONSISTENCY_CHECK)
        survivors = index_list(
            expect_stage(message, Stage.CONSISTENCY_CHECK).get("survivors"), "survivors"
        )
        if self.index not in survivors:
            raise self._abort("My masked input is not in the survivor set.")
        try:
            self.floors.check_survivors(survivors, self.group, self.members)
        except FloorError:
            self.stage = Stage.ABORTED
            raise
        if set(survivors) & set(self.neighbours) - set(self._maskers):
            # A neighbour that never shared keys with me cannot have sent a masked input:
            # listing it would count a pod that is in no sum.
            self.stage = Stage.ABORTED
            raise FloorError(
                "A neighbour that never shared keys is listed as a survivor.",
                code="survivors_inconsistent",
            )
        if len(set(self._maskers) & set(survivors)) < self.threshold:
            self.stage = Stage.ABORTED
            raise SurvivorsBelowFloor("Too few neighbours survived to unmask safely.")
        self._survivors = sorted(survivors)
        self.stage = Stage.UNMASK
        return {"signature": b64(crypto.sign_survivors(self._identity, self.round_id, survivors))}

    # Stage 4 -------------------------------------------------------------------------------------

    def unmask(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Reveal b-shares of surviving neighbours and s-shares of dropped ones — never both."""
        self._require(Stage.UNMASK)
        m = expect_stage(message, Stage.UNMASK)
        alive = set(index_list(m.get("alive"), "alive"))
        dropped = set(index_list(m.get("dropped"), "dropped"))
        maskers = set(self._maskers)
        if alive & dropped:
            raise ProtocolError("A pod cannot be both alive and dropped.", code="alive_and_dropped")
        if not (alive | dropped) <= maskers:
            raise ProtocolError(
                "Unmask names pods outside my neighbourhood.", code="not_a_neighbour"
            )
        signed = set(self._survivors)
        if alive != maskers & signed or dropped != maskers - signed:
            self.stage = Stage.ABORTED
            raise FloorError(
                "The unmask request differs from the survivor set I signed.",
                code="survivors_inconsistent",
            )
        if len(alive) < self.threshold:
            self.stage = Stage.ABORTED
            raise SurvivorsBelowFloor("Too few neighbours survived to unmask safely.")
        signatures = index_map(m.get("signatures", {}), "signatures")
        valid = 0
        signed_message = crypto.survivors_message(self.round_id, self._survivors)  # once, not per v
        for v, value in signatures.items():
            if v not in alive or v not in self._identities:
                raise ProtocolError(
                    "A signature from outside my survivors.", code="not_a_neighbour"
                )
            crypto.verify_survivors_message(
                self._identities[v], unb64(value, "signature", size=64), signed_message
            )
            valid += 1
        if valid < self.threshold:
            self.stage = Stage.ABORTED
            raise FloorError(
                f"Only {valid} neighbours signed the survivor set; {self.threshold} are needed.",
                code="consistency_unconfirmed",
            )
        self.stage = Stage.DONE  # at most one answer per round, whatever follows
        return {
            "b_shares": {str(v): b64(shamir.share_bytes(self._held[v][0])) for v in sorted(alive)},
            "s_shares": {
                str(v): b64(shamir.share_bytes(self._held[v][1])) for v in sorted(dropped)
            },
        }
