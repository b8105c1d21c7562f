"""SCAFFOLD on the pod: the service's control variate c for a round, and the pod's own c_i.

Under ``training.algorithm = scaffold`` (Karimireddy et al. 2020) every pod keeps a control
variate c_i per request, in its home (``scaffold/<request>.safetensors``, 0600, like the privacy
ledger; in memory for a worker given no directory). A pod that never trained for a request
starts at c_i = 0. Its new c_i becomes its own only once the round it was computed in
completed (``round.end`` completed, after its masked input went into the sum): the service then
added the same Δc_i to c, so c stays the mean of the pods' c_i. A round that aborts leaves c_i
as it was, as it leaves c.

The service's c for a round is a download like the global weights (safetensors, one float32
tensor ``control`` of the model's dimension, SHA-256 in the task); round 1 has none (c = 0).
Nothing of c_i ever leaves the pod but Δc_i, and that only inside the masked vector.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.modelspec import vector_size
from training.modelspec.spec import ModelSpec
from training.modelspec.vectors import control_bytes, control_from_bytes

from .home import write_private
from .protocol import on_pinned_origin

CONTROLS_DIR = "scaffold"  # in the pod's home, 0700; one 0600 file per request

Vector = npt.NDArray[np.float32]

_REQUEST_ID = re.compile(r"^[0-9a-fA-F-]{1,64}$")


class ControlError(Exception):
    """The service's control variate is missing, altered or of the wrong shape."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _control(blob: bytes, dim: int) -> Vector:
    try:
        return control_from_bytes(blob, dim)
    except ValueError:
        raise ControlError("control_malformed") from None


def scaffold_inputs(
    spec: ModelSpec,
    task: Mapping[str, Any],
    controls: ControlVariates,
    download: Callable[[str], bytes],
) -> tuple[Vector | None, Vector | None]:
    """:func:`training.modelspec.trainer.train_local`'s control variates when the verified
    spec asks for SCAFFOLD (none otherwise): the service's c for the round and the pod's own
    c_i for the request."""
    if spec.training.algorithm.get("type") != "scaffold":
        return None, None
    dim = vector_size(spec)
    return server_control(task, dim, download), controls.get(str(task["request"]), dim)


def server_control(task: Mapping[str, Any], dim: int, download: Callable[[str], bytes]) -> Vector:
    """The service's c for the task's round: zeros when the round trains from the initial
    weights (no ``control_url``), else the download, checked against ``control_sha256``.

    Only the round's facts come from the task (where c is, its hash); whether to use c at all
    is the verified spec's ``training.algorithm``, the caller's check."""
    url, digest = task.get("control_url"), task.get("control_sha256")
    if url is None and digest is None:
        if int(task.get("base_round", 0)) != 0:
            raise ControlError("control_missing")  # a later round always has a c
        return np.zeros(dim, np.float32)
    if not isinstance(url, str) or not isinstance(digest, str):
        raise ControlError("control_missing")
    if not on_pinned_origin(url):
        raise ControlError("origin_not_pinned")  # the pod's token goes to no other host
    blob = download(url)
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ControlError("control_mismatch")
    return _control(blob, dim)


class ControlVariates:
    """A pod's own c_i, per request: staged while a round runs, committed once it completed."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._memory: dict[str, Vector] = {}
        self._staged: dict[str, Vector] = {}  # computed, masked input not yet sent
        self._sent: dict[int, tuple[str, Vector]] = {}  # in a round's sum, round not yet over

    def _path(self, request_id: str) -> Path | None:
        if self.directory is None:
            return None
        if not _REQUEST_ID.match(request_id):
            raise ControlError("malformed_task")
        return self.directory / f"{request_id}.safetensors"

    def get(self, request_id: str, dim: int) -> Vector:
        """The pod's c_i for a request (zeros if it never completed a round of it, or if the
        kept one no longer fits the model)."""
        path = self._path(request_id)
        kept = self._memory.get(request_id)
        if kept is None and path is not None and path.exists():
            try:
                kept = _control(path.read_bytes(), dim)
            except ControlError:
                kept = None
        if kept is None or kept.shape != (dim,):
            return np.zeros(dim, np.float32)
        return kept

    def stage(self, request_id: str, control: npt.NDArray[np.floating[Any]]) -> None:
        self._staged[request_id] = np.asarray(control, dtype=np.float32)

    def sent(self, request_id: str, round_id: int) -> None:
        """The masked input holding Δc_i left the pod in ``round_id``."""
        control = self._staged.pop(request_id, None)
        if control is not None:
            self._sent[round_id] = (request_id, control)

    def round_over(self, round_id: int, completed: bool) -> None:
        """Keep the new c_i if its round completed (the service added Δc_i to c), else drop it."""
        held = self._sent.pop(round_id, None)
        if held is None or not completed:
            return
        request_id, control = held
        self._memory[request_id] = control
        path = self._path(request_id)
        if path is not None:
            write_private(path, control_bytes(control))
