"""A round's files on storage: masked inputs (``masked/round-<id>/``) and shard sums
(``aggregates/round-<id>/``), one directory per round.

A masked input has one name per round and pod, and is written under the round's lock before
the transaction recording it commits. A process killed in between leaves a file no row refers
to: the pod's retry (on any process) overwrites it, and the round's directory goes when the
round ends — whatever a killed process left in it. A name never depends on what else is stored,
so no storage probes for a free one, and a retry never leaves its first attempt behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from typing import BinaryIO

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction

SHARDS_DIR = "aggregates"
MASKED_DIR = "masked"
_COPY_CHUNK = 1 << 20


def round_dir(base: str, round_id: int) -> str:
    return f"{base}/round-{round_id}"


def input_name(round_id: int, index: int) -> str:
    """Where pod ``index``'s masked input for round ``round_id`` is stored."""
    return f"{round_dir(MASKED_DIR, round_id)}/pod-{index}.u32"


def write_input(name: str, body: bytes | memoryview | BinaryIO) -> None:
    """Write a masked input at ``name`` (the file-system storage), replacing what a killed
    attempt left there: written under a name of its own, then renamed over (atomic), so the
    file at ``name`` is always a whole input."""
    path = default_storage.path(name)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=settings.FILE_UPLOAD_DIRECTORY_PERMISSIONS or 0o777, exist_ok=True)
    part = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
    mode = settings.FILE_UPLOAD_PERMISSIONS or 0o666
    try:
        with open(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
            if isinstance(body, bytes | memoryview):
                out.write(body)
            else:
                shutil.copyfileobj(body, out, _COPY_CHUNK)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise


def delete_input_on_commit(name: str) -> None:
    """Delete a stored input once the transaction forgetting it commits (a rollback keeps the
    row and its file together; a process killed after the commit leaves the file to its
    round's end)."""
    transaction.on_commit(lambda: default_storage.delete(name))


def remove_round_dir(base: str, round_id: int) -> int:
    """Delete every file in a round's directory and the directory; how many files."""
    folder = round_dir(base, round_id)
    try:
        files = default_storage.listdir(folder)[1]
    except FileNotFoundError:
        return 0
    for file in files:
        default_storage.delete(f"{folder}/{file}")
    with contextlib.suppress(NotImplementedError, OSError):
        os.rmdir(default_storage.path(folder))
    return len(files)
