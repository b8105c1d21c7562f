"""The allocator tuning: large buffers freed and made again are reused, not page-faulted afresh.

Each case runs in a fresh interpreter, so the process's allocator starts as glibc sets it and
the page faults counted are those of the buffers alone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from training.shared import allocator

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the tuning applies to glibc's allocator only",
)

# What a masked input goes through on the server: a fresh buffer for each frame, copied (the
# WebSocket reader's slice, its unmasking), then freed; the next frame's buffers the same.
_BUFFERS = """
import json, os, resource, sys
from training.shared import allocator
tuned = allocator.tune()
frame = os.urandom(400_000)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # warm up: the first buffers fault in whatever the heap does
    bytes(bytearray(frame))
before = faults()
for _ in range(300):
    bytes(bytearray(frame))
print(json.dumps({"tuned": tuned, "faults": faults() - before}))
"""


def _run(env_tune: str) -> dict[str, object]:
    env = {**os.environ, "DATASPACE_MALLOC_TUNE": env_tune}
    out = subprocess.run(
        [sys.executable, "-c", _BUFFERS], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@glibc
def test_tuned_buffers_are_reused_without_page_faults() -> None:
    untuned = _run("0")
    tuned = _run("1")
    assert untuned["tuned"] is False and tuned["tuned"] is True
    faults = tuned["faults"]
    assert isinstance(faults, int) and isinstance(untuned["faults"], int)
    # 300 buffers of 400 KB are 30,000 pages: tuned, almost none fault again.
    assert faults < 1_000, tuned
    # The control: untuned, glibc gives each buffer back and faults it in again (if a glibc
    # ever stops doing so, this says the tuning is no longer needed).
    assert untuned["faults"] > 10 * max(faults, 100), (untuned, tuned)


def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("DATASPACE_MALLOC_TUNE", "off")
    assert allocator.tune() is False
    # Decided once per process: asking again changes nothing.
    monkeypatch.setenv("DATASPACE_MALLOC_TUNE", "1")
    assert allocator.tune() is False


def test_only_glibc_is_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.delenv("DATASPACE_MALLOC_TUNE", raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.tune() is False
