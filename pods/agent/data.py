"""Where a pod's records come from for a round: its local store (``run``), or a partition held
in memory (``simulate``); and how the consented fields become model inputs — one shared pure
function, :func:`training.modelspec.fields.encode_rows`, by the plan's ``data.schema``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from training.modelspec.fields import Encoded, Field, encode_rows, label_domain, parse_fields
from training.modelspec.spec import ModelSpec


class DataSource(Protocol):
    """Where a pod's records come from: the local store, or a partition in ``simulate``."""

    def records(self, category: str) -> list[dict[str, Any]]: ...

    def fields(self, category: str) -> list[dict[str, Any]] | None:
        """The catalog's fields as the records were imported under (None: not known)."""
        ...


class StoreData:
    """Records from the pod's local SQLite store."""

    def __init__(self, store_path: Any) -> None:
        self.store_path = store_path

    def records(self, category: str) -> list[dict[str, Any]]:
        from .store import LocalStore

        store = LocalStore(self.store_path)
        try:
            return store.records(category)
        finally:
            store.close()

    def fields(self, category: str) -> list[dict[str, Any]] | None:
        from .store import LocalStore

        store = LocalStore(self.store_path)
        try:
            return store.fields(category)
        finally:
            store.close()


@dataclass
class MemoryData:
    """Records held in memory (``simulate``): one category's columns by field name, and the
    catalog's fields they were read under (None: plain numbers)."""

    category: str
    columns: dict[str, Any]
    schema: list[dict[str, Any]] | None = field(default=None)

    def records(self, category: str) -> list[dict[str, Any]]:
        if category != self.category:
            raise KeyError(category)
        names = list(self.columns)
        values = [np.asarray(self.columns[n]).tolist() for n in names]
        return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]

    def fields(self, category: str) -> list[dict[str, Any]] | None:
        return self.schema if category == self.category else None

    def count(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def plan_schema(spec: ModelSpec, local: Sequence[Mapping[str, Any]] | None) -> dict[str, Field]:
    """The fields a round encodes by: the plan's ``data.schema`` (bound by the plan hash), or
    for a plan without one the pod's own catalog copy (each field a plain number if unknown)."""
    if spec.data.schema is not None:
        return {f.name: f for f in spec.data.schema}
    known = {f.name: f for f in parse_fields(list(local))} if local else {}
    used = [*spec.data.features, *([spec.data.label] if spec.data.label else [])]
    return {n: known.get(n) or Field(name=n, type="float") for n in used}


def encode_for(
    spec: ModelSpec, records: Sequence[Mapping[str, Any]], local: Sequence[Any] | None
) -> Encoded:
    """The plan's inputs and labels from a pod's records (what ``run``, ``simulate`` and the
    provider's offline ``check`` train on)."""
    return encode_rows(
        records,
        plan_schema(spec, local),
        spec.data.features,
        spec.data.label,
        label_ok=label_domain(spec.training.loss, spec.output_shape),
    )
