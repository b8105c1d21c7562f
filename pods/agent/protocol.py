"""The pod↔service contract: the one module both sides read (docs/architecture.md, "Messages").

Message types, the task a round's first stage carries, WebSocket close codes, what pod and
service sign, canonical JSON and the plan hash. Pure: it imports nothing of the server or of
torch, so the pod agent, the provider client and the consent log share it.

Every signed message starts with a domain-separation label, so a signature made for one purpose
(pairing, the channel challenge) can never be replayed as another.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

PAIRING_LABEL = b"dataspace/pairing/v1\x00"
CHALLENGE_LABEL = b"dataspace/ws-challenge/v1\x00"


class MessageType(enum.StrEnum):
    """The ``type`` of a control-channel message (``/ws/pods/``), in handshake order."""

    HELLO = "hello"  # pod → service: bearer token
    CHALLENGE = "challenge"  # service → pod: a fresh nonce to sign
    PROVE = "prove"  # pod → service: Ed25519 signature over the challenge
    WELCOME = "welcome"  # service → pod: ready, with the heartbeat interval
    # pod → service: a heartbeat every ``heartbeat`` seconds, sent as PING_TEXT; unanswered
    # (the service's protocol-level pings find connections gone silent).
    PING = "ping"
    ERROR = "error"
    # service → pod: answer this stage. The first carries the task and, for a pod new to the
    # request, its owner's signed consent receipt (``receipt``; checked as a fetched one).
    ROUND_STAGE = "round.stage"
    ROUND_REPLY = "round.reply"  # pod → service: a stage's answer
    ROUND_DECLINE = "round.decline"  # pod → service: refuse the task, with a reason code
    ROUND_END = "round.end"  # service → pod: the round is over for this pod
    ROUND_STORED = "round.stored"  # service → pod: its masked input (a binary frame) is stored


# A heartbeat as pods send it: the service knows it by its text, before any JSON is parsed
# (idle pods send nothing else; 10,000 of them send 500 a second).
PING_TEXT = json.dumps({"type": MessageType.PING})


class RoundEnd(enum.StrEnum):
    """The ``status`` of a ``round.end`` message."""

    COMPLETED = "completed"
    ABORTED = "aborted"
    LEFT = "left"  # the owner withdrew or paused: the pod was taken out of the round


class CloseCode(enum.IntEnum):
    """WebSocket close codes (4000–4999 are for applications, RFC 6455 section 7.4.2)."""

    PROTOCOL = 4400  # malformed, unknown type or out of order
    UNAUTHENTICATED = 4401  # bad or expired token, or a proof that does not verify
    FORBIDDEN = 4403  # the pod was revoked, or a token without the needed scope
    NOT_FOUND = 4404  # progress stream: no such request, or not the caller's
    TIMEOUT = 4408  # no hello/proof in time, or heartbeats stopped
    REPLACED = 4409  # the same pod connected again elsewhere
    PAUSED = 4423  # the owner paused all training: come back later


class Task(TypedDict):
    """What a round's first stage asks of a pod (the ``task`` of its ``round.stage`` message).

    ``request``, ``plan_hash``, ``spec`` and ``initial_weights_sha256`` are checked by the pod
    against its owner's signed receipt; the rest are per-round facts. No privacy parameter rides
    here: the pod takes them all from the verified spec (``pods.agent.plan``).
    """

    request: str
    plan_hash: str
    spec: dict[str, Any]
    weights_url: str
    weights_sha256: str
    base_round: int
    initial_weights_sha256: str
    masked_input_url: str
    seed: int  # the public training seed of the round
    # SCAFFOLD after its first round: where the service's control variate c is (safetensors,
    # served like the weights) and its SHA-256. Whether c is used is the verified spec's call.
    control_url: NotRequired[str]
    control_sha256: NotRequired[str]
    # Group value (the verified spec's ``valuation``): the last round's models without one
    # group each — label, URL, SHA-256 — which the pod evaluates on its held-out split.
    candidates: NotRequired[list[dict[str, str]]]


# A masked input sent on the control channel as one binary WebSocket frame, when the service
# offers it (``welcome`` carries ``masked_frames``: the largest frame it takes, in bytes):
# a fixed header — magic, round id, the vector's SHA-256 — then the vector (uint32, little-endian).
MASKED_FRAME = struct.Struct("<4sq32s")
MASKED_FRAME_MAGIC = b"DSM1"


def masked_frame(round_id: int, vector: bytes) -> bytes:
    """The binary frame that carries a masked input for round ``round_id``."""
    digest = hashlib.sha256(vector).digest()
    return MASKED_FRAME.pack(MASKED_FRAME_MAGIC, round_id, digest) + vector


def read_masked_frame(frame: bytes) -> tuple[int, str, memoryview]:
    """(round id, SHA-256 in hex, vector) of a masked-input frame; ValueError if it is not one
    (the hash is only read here: the service checks it against the vector). The vector is a
    view of the frame, not a copy (a few hundred KiB per pod and round)."""
    if len(frame) < MASKED_FRAME.size:
        raise ValueError("too short for a masked-input frame")
    magic, round_id, digest = MASKED_FRAME.unpack_from(frame)
    if magic != MASKED_FRAME_MAGIC:
        raise ValueError("not a masked-input frame")
    return round_id, digest.hex(), memoryview(frame)[MASKED_FRAME.size :]


# A round's global weights sent on the control channel as one binary frame, just before the
# task that names them, to a pod whose ``hello`` carries ``weights_frames`` (the largest frame
# it takes, in bytes): magic, the weights' SHA-256, then the safetensors file. The pod keeps
# them only if they hash to what the header says, uses them only if the task names that hash,
# and checks them against the task as it checks a download; otherwise it downloads them.
WEIGHTS_FRAME = struct.Struct("<4s32s")
WEIGHTS_FRAME_MAGIC = b"DSW1"


def weights_frame(blob: bytes, sha256: str) -> bytes:
    """The binary frame that carries weights whose SHA-256 (hex) is ``sha256``."""
    return WEIGHTS_FRAME.pack(WEIGHTS_FRAME_MAGIC, bytes.fromhex(sha256)) + blob


def read_weights_frame(frame: bytes) -> tuple[str, bytes] | None:
    """(SHA-256 in hex, weights) of a weights frame whose body hashes to its header's hash;
    None for anything else (another frame, or a body that does not match)."""
    if len(frame) < WEIGHTS_FRAME.size:
        return None
    magic, digest = WEIGHTS_FRAME.unpack_from(frame)
    body = frame[WEIGHTS_FRAME.size :]
    if magic != WEIGHTS_FRAME_MAGIC or hashlib.sha256(body).digest() != digest:
        return None
    return digest.hex(), body


# The round metrics a progress event and the provider client carry; never a per-pod figure.
PUBLIC_METRICS = ("participants", "eval_loss", "eval_accuracy", "eval_examples", "sample_rate")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8, no NaN/Infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def plan_hash(spec: Mapping[str, Any], weights_sha256: str, notice_sha256: str) -> str:
    """SHA-256 over the spec, the initial weights' hash and the privacy notice's hash: what a
    person consents to, recomputable by their pod."""
    payload = {"spec": spec, "weights_sha256": weights_sha256, "notice_sha256": notice_sha256}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


# What a round computes on, bound into its secure-aggregation id: every signature a pod makes
# in the round (adverts, the survivor set) and every pairwise mask key derive from that id.
TASK_BOUND = (
    "request",
    "plan_hash",
    "weights_sha256",
    "base_round",
    "initial_weights_sha256",
    "seed",
    "control_sha256",
)


def task_digest(task: Mapping[str, Any]) -> str:
    """SHA-256 over what a round's pods compute on: the request and its plan, the weights, the
    training seed, SCAFFOLD's control variate and the group-value candidates (by hash). The
    spec is bound by the plan hash each pod checks against its owner's receipt."""
    bound: dict[str, Any] = {name: task.get(name) for name in TASK_BOUND}
    bound["candidates"] = [
        [str(c.get("label")), str(c.get("sha256"))] for c in task.get("candidates") or []
    ]
    return hashlib.sha256(canonical_json(bound)).hexdigest()


def bind_task(round_id: str, task: Mapping[str, Any]) -> str:
    """The secure-aggregation id of round ``round_id`` run on ``task``.

    A service that gives some pods another model than the rest (to isolate one pod's update
    inside the sum: the model-inconsistency attack) gives them another id too, so those pods
    and their neighbours cannot verify each other's signed keys, and each stops the round
    before any masked input leaves it. The pod checks the id it is given against the task it
    was given (``pods.agent.rounds``)."""
    return f"{round_id}#{task_digest(task)}"


def task_bound(secagg_round_id: object, task: Mapping[str, Any]) -> bool:
    """Whether ``secagg_round_id`` is some round's id bound to ``task``."""
    if not isinstance(secagg_round_id, str):
        return False
    base, mark, _ = secagg_round_id.rpartition("#")
    return bool(base) and bool(mark) and secagg_round_id == bind_task(base, task)


def key_fingerprint(public_key: bytes) -> str:
    """Human-comparable fingerprint of an Ed25519 public key (SHA-256, 80 bits, base32 groups).

    The pod prints it at pairing and the portal shows it on the approval page, so a person can
    check that the pod they approve is the one in front of them.
    """
    digest = hashlib.sha256(public_key).digest()[:10]
    text = base64.b32encode(digest).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def pairing_message(device_code: str, public_key: bytes) -> bytes:
    """Signed by the pod's identity key to prove possession when it asks to be paired."""
    return PAIRING_LABEL + device_code.encode("utf-8") + b"\x00" + public_key


def challenge_message(nonce: bytes, pod_id: str) -> bytes:
    """Signed by the pod's identity key to open the control channel (fresh nonce per connection)."""
    return CHALLENGE_LABEL + nonce + pod_id.encode("ascii")


def on_pinned_origin(path: str) -> bool:
    """Whether ``path`` is a plain absolute path (``/api/...``): no scheme, no host, no
    protocol-relative ``//host``, no backslash, space or control character a URL parser might
    read as leaving the origin pinned at pairing."""
    return (
        path.startswith("/")
        and not path.startswith("//")
        and "\\" not in path
        and ":" not in path.split("?", 1)[0]
        and path.isprintable()
        and " " not in path
    )
