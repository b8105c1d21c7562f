"""Where a pod's records come from for a round: its local store (``run``), or a partition held
in memory (``simulate``). Both give the consented fields as arrays; nothing else is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class DataSource(Protocol):
    """Where a pod's records come from: the local store, or a partition in ``simulate``."""

    def arrays(
        self, category: str, features: Sequence[str], label: str
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]: ...


class StoreData:
    """Records from the pod's local SQLite store."""

    def __init__(self, store_path: Any) -> None:
        self.store_path = store_path

    def arrays(
        self, category: str, features: Sequence[str], label: str
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
        from .store import LocalStore

        store = LocalStore(self.store_path)
        try:
            return store.arrays(category, features, label)
        finally:
            store.close()


@dataclass
class MemoryData:
    """Records held in memory (``simulate``): one category's columns by field name."""

    category: str
    columns: dict[str, npt.NDArray[np.float64]]

    def arrays(
        self, category: str, features: Sequence[str], label: str
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
        if category != self.category:
            raise KeyError(category)
        x = np.stack([self.columns[f] for f in features], axis=1).astype(np.float32)
        return x, np.asarray(self.columns[label], dtype=np.float64)

    def count(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0
