"""A bounded, thread-safe map that forgets its least recently used entries: what a process
keeps of immutable things it would otherwise read or build again (weights by hash, tensor
layouts by architecture, model versions, a round's open stage)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """At most ``entries`` values, and (with ``weigh``) values whose weights sum to at most
    ``weight``; a lookup makes an entry the most recent, an insertion past the bounds drops
    the least recent (a single value heavier than the bound stays, alone). Safe to share
    between threads: each call holds a lock briefly, and nothing is built under it (two
    threads missing the same key may both build it; the later insertion wins, which is
    harmless for values that are the same whoever builds them)."""

    def __init__(
        self,
        entries: int,
        *,
        weight: int | None = None,
        weigh: Callable[[V], int] | None = None,
    ) -> None:
        if entries < 1 or (weight is None) != (weigh is None):
            raise ValueError("keep at least one entry; a weight bound needs weigh, and back")
        self._entries = entries
        self._weight = weight
        self._weigh = weigh
        self._held = 0
        self._map: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._map.get(key)
            if value is not None:
                self._map.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` under ``key`` (the most recent); returns it."""
        with self._lock:
            old = self._map.pop(key, None)
            if old is not None and self._weigh is not None:
                self._held -= self._weigh(old)
            self._map[key] = value
            if self._weigh is not None:
                self._held += self._weigh(value)
            while len(self._map) > self._entries or (
                self._weight is not None and self._held > self._weight and len(self._map) > 1
            ):
                _, dropped = self._map.popitem(last=False)
                if self._weigh is not None:
                    self._held -= self._weigh(dropped)
            return value

    def find(self, match: Callable[[K], bool]) -> V | None:
        """The most recent value whose key matches (a scan: for a few entries)."""
        with self._lock:
            for key in reversed(self._map):
                if match(key):
                    return self._map[key]
        return None

    def clear(self) -> None:
        with self._lock:
            self._map.clear()
            self._held = 0

    def __len__(self) -> int:
        return len(self._map)
