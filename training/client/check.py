"""``dataspace-provider check``: test locally first, offline.

Runs on the provider's machine exactly the checks the service runs on a submission
(:func:`training.modelspec.submission.check_submission`, against a catalog file), then — given a
sample of records — reads the sample as a pod's importer does, encodes it as a pod would for
this plan, trains one local round and reports what the pod would send: sizes, never values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.modelspec import safejson
from training.modelspec.datafit import with_schema
from training.modelspec.errors import SpecError
from training.modelspec.submission import check_submission

# The bundled catalog, where the service's package is installed next to this one.
BUNDLED_CATALOG = Path(__file__).resolve().parents[2] / "dataspace" / "catalog" / "categories.json"


class CheckFailed(Exception):
    """The check found what the service would refuse, or could not run; one line."""


def read_catalog(path: Path | None) -> dict[str, Any]:
    """A catalog file (a list of categories, as ``load_categories`` and ``dataspace-provider
    categories --json`` give them) by slug."""
    path = path or BUNDLED_CATALOG
    try:
        entries = safejson.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckFailed(f"cannot read the catalog {path} ({exc.__class__.__name__})") from None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("slug"), str) for e in entries
    ):
        raise CheckFailed(f"{path} is not a list of catalog categories")
    return {str(e["slug"]): e.get("fields") for e in entries}


def check(
    spec_path: Path,
    weights_path: Path,
    *,
    catalog_path: Path | None = None,
    sample: Path | None = None,
    write_spec: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """What the service would say of SPEC and WEIGHTS, and one local round on the sample."""
    try:
        spec = safejson.loads(spec_path.read_text(encoding="utf-8"))
        weights = weights_path.read_bytes()
    except OSError as exc:
        raise CheckFailed(f"cannot read {exc.filename or spec_path}") from None
    except UnicodeDecodeError:
        raise CheckFailed(f"{spec_path.name} is not UTF-8 text") from None
    except safejson.UnsafeJson as exc:
        raise CheckFailed(f"{spec_path.name}: {exc.message}") from None
    catalog = read_catalog(catalog_path)
    if write_spec is not None:
        category = (spec.get("data") or {}).get("category") if isinstance(spec, dict) else None
        if category not in catalog:
            raise CheckFailed(f"unknown_category: {category!r} is not in the catalog")
        spec = with_schema(spec, catalog[category])
        write_spec.write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n", "utf-8")
    try:
        parsed = check_submission(spec, weights, category_fields=catalog.get)
    except SpecError as exc:
        where = f" (at {exc.field})" if exc.field else ""
        raise CheckFailed(f"{exc.code}: {exc.message}{where}") from None
    result: dict[str, Any] = {
        "valid": True,
        "category": parsed.data.category,
        "inputs": parsed.input_width,
        "outputs": list(parsed.output_shape),
        "parameters": parsed.parameter_count,
    }
    if write_spec is not None:
        result["spec_written"] = str(write_spec)
    if sample is not None:
        result["local_round"] = local_round(parsed, weights, sample, catalog, seed=seed)
    return result


def local_round(
    parsed: Any, weights: bytes, sample: Path, catalog: dict[str, Any], *, seed: int
) -> dict[str, Any]:
    """One round as a pod would train it on ``sample``: what it would send, in sizes."""
    from pods.agent.data import encode_for
    from pods.agent.importer import ImportFailed, import_file
    from pods.agent.plan import PlanPrivacy, contribution
    from training.modelspec.trainer import train_local
    from training.modelspec.weights import load_weights

    fields = catalog[parsed.data.category]
    try:
        rows = import_file(sample, fields).rows
    except ImportFailed as exc:
        raise CheckFailed(f"{sample.name}: {exc}") from None
    encoded = encode_for(parsed, rows, fields)
    if encoded.used == 0:
        raise CheckFailed(f"{sample.name}: no record the plan can use ({dict(encoded.dropped)})")
    trained = train_local(parsed, load_weights(weights, parsed), encoded.x, encoded.y, seed=seed)
    parts = contribution(trained, PlanPrivacy.of(parsed), parsed)
    coordinates = sum(int(p.size) for p in parts.values())
    return {
        "records": len(rows),
        "used": encoded.used,
        "set_aside": dict(encoded.dropped),
        "filled": dict(encoded.filled),
        "trained_on": trained.num_examples,
        "steps": trained.steps,
        "sends": {name: int(p.size) for name, p in parts.items()},
        "masked_input_bytes": 4 * coordinates,
    }
