"""A pod's SCAFFOLD control variates: its own c_i in its home, the service's c checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pods.agent.controls import ControlError, ControlVariates, server_control
from training.modelspec.vectors import control_bytes

REQUEST = "0b6f3c1e-2d4a-4c55-9f3e-1a2b3c4d5e6f"


def test_c_i_starts_at_zero_and_is_kept_only_once_its_round_completed(tmp_path: Path) -> None:
    home = tmp_path / "scaffold"
    controls = ControlVariates(home)
    assert np.array_equal(controls.get(REQUEST, 3), np.zeros(3, np.float32))  # a fresh pod
    new = np.array([0.5, -1.0, 2.0], np.float32)

    controls.stage(REQUEST, new)
    controls.round_over(7, completed=True)  # its masked input never left: nothing to keep
    assert not (home / f"{REQUEST}.safetensors").exists()

    controls.stage(REQUEST, new)
    controls.sent(REQUEST, 7)
    controls.round_over(7, completed=False)  # aborted: the service did not step c either
    assert np.array_equal(controls.get(REQUEST, 3), np.zeros(3, np.float32))

    controls.stage(REQUEST, new)
    controls.sent(REQUEST, 8)
    controls.round_over(8, completed=True)
    path = home / f"{REQUEST}.safetensors"
    assert path.stat().st_mode & 0o777 == 0o600
    assert np.array_equal(ControlVariates(home).get(REQUEST, 3), new)  # after a restart too
    assert np.array_equal(ControlVariates(home).get(REQUEST, 4), np.zeros(4, np.float32))
    assert np.array_equal(ControlVariates(home).get(REQUEST.replace("0", "1"), 3), np.zeros(3))


def test_the_services_c_is_checked_against_the_task() -> None:
    c = np.array([1.0, 2.0], np.float32)
    blob = control_bytes(c)
    task = {
        "base_round": 3,
        "control_url": "/api/v1/pod/rounds/9/control",
        "control_sha256": hashlib.sha256(blob).hexdigest(),
    }
    assert np.array_equal(server_control(task, 2, lambda path: blob), c)
    assert np.array_equal(server_control({"base_round": 0}, 2, lambda p: b""), np.zeros(2))
    cases = [
        ({"base_round": 3}, blob, "control_missing"),  # a later round always has a c
        (task, control_bytes(c + 1), "control_mismatch"),
        (task | {"control_url": "https://elsewhere.example/c"}, blob, "origin_not_pinned"),
        (task | {"control_sha256": hashlib.sha256(b"x").hexdigest()}, b"x", "control_malformed"),
    ]
    for bad, served, code in cases:
        with pytest.raises(ControlError) as refused:
            server_control(bad, 2, lambda path, served=served: served)
        assert refused.value.code == code
    with pytest.raises(ControlError) as refused:
        server_control(task, 3, lambda path: blob)  # not the model's dimension
    assert refused.value.code == "control_malformed"
