"""Whether a spec can train on its fields: types, input width, and a label that fits the loss.

Run by :func:`training.modelspec.validate_spec` on a spec's own ``data.schema`` and, at
submission, against the catalog (:func:`check_against_catalog`) — the same function on the
server and in the provider's offline ``dataspace-provider check``. Errors are
:class:`~training.modelspec.errors.SpecError` with the JSON path at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SpecError
from .fields import Field, FieldError, number, parse_fields


def _where(fields: Sequence[Field]) -> str:
    wide = [f"{f.name}: one-hot over {f.width}" for f in fields if f.width != 1]
    return f" ({'; '.join(wide[:3])})" if wide else ""


def encoded_widths(data: Any) -> str:
    """``The features encode to 6 inputs (activity: one-hot over 3).`` for a DataSpec."""
    by_name = {f.name: f for f in data.schema or ()}
    used = [by_name.get(n) or Field(name=n, type="float") for n in data.features]
    return f"The features encode to {sum(f.width for f in used)} inputs{_where(used)}."


def data_schema(value: Any, features: tuple[str, ...], label: str | None) -> tuple[Field, ...]:
    """``data.schema``: the catalog's entry for each feature and the label, nothing else."""
    try:
        schema = parse_fields(value, "data.schema")
    except FieldError as exc:
        raise SpecError("invalid_schema", exc.message, exc.path or "data.schema") from None
    declared = {f.name for f in schema}
    wanted = {*features, *([label] if label else [])}
    if declared != wanted:
        odd = sorted(declared ^ wanted)[0]
        raise SpecError(
            "invalid_schema",
            f"data.schema must declare exactly the features and the label ({odd!r}).",
            "data.schema",
        )
    return schema


def check_schema_fit(
    data: Any, loss: str, output_shape: Sequence[int], first_layer: tuple[str, Mapping[str, Any]]
) -> None:
    """:func:`check_fit` on a spec's own ``data.schema`` (a DataSpec that carries one)."""
    check_fit(
        {f.name: f for f in data.schema},
        data.features,
        data.label,
        loss=loss,
        output_shape=output_shape,
        input_width=data.width,
        first_layer=first_layer,
    )


def check_fit(
    schema: Mapping[str, Field],
    features: Sequence[str],
    label: str | None,
    *,
    loss: str,
    output_shape: Sequence[int],
    input_width: int,
    first_layer: tuple[str, Mapping[str, Any]] | None,
) -> None:
    """Refuse a spec whose fields cannot feed its model: free text, an input width that is not
    the encoded width, features an embedding cannot index, or a label the loss and output
    layer cannot take (class count; 0/1 for BCE; a number for MSE)."""
    used = [schema[name] for name in features]
    for index, f in enumerate(used):
        if not f.trainable:
            raise SpecError(
                "field_not_trainable",
                f"{f.name!r} is free text: no model can train on it.",
                f"data.features[{index}]",
            )
    width = sum(f.width for f in used)
    if width != input_width:
        raise SpecError(
            "input_width_mismatch",
            f"The features encode to {width} inputs{_where(used)}, the model takes {input_width}.",
            "model.layers[0]",
        )
    if first_layer is not None and first_layer[0] == "embedding":
        size = int(first_layer[1]["num_embeddings"])
        for index, f in enumerate(used):
            if not _indexable(f, size):
                raise SpecError(
                    "field_not_indexable",
                    f"An embedding of {size} rows takes whole numbers 0 to {size - 1}; "
                    f"{f.name!r} is not (use a categorical field with index encoding, or an "
                    "int field whose range fits).",
                    f"data.features[{index}]",
                )
    if label is not None:
        _check_label(schema[label], loss, output_shape)


def _indexable(f: Field, size: int) -> bool:
    if f.type == "categorical":
        return f.encoding == "index" and len(f.values) <= size
    if f.type == "bool":
        return size >= 2
    if f.type == "int" and f.range is not None:
        return bool(f.range[0] >= 0 and f.range[1] < size)
    return False


def _label_error(message: str) -> SpecError:
    return SpecError("label_not_fit", message, "data.label")


def _check_label(f: Field, loss: str, output_shape: Sequence[int]) -> None:
    if not f.trainable:
        raise SpecError(
            "field_not_trainable", f"{f.name!r} is free text: no model can learn it.", "data.label"
        )
    outputs = int(output_shape[-1]) if output_shape else 1
    lo_hi = (number(f, f.range[0]), number(f, f.range[1])) if f.range is not None else None
    if loss == "cross_entropy":
        if f.type == "categorical":
            classes = len(f.values)
        elif f.type == "bool":
            classes = 2
        elif f.type == "int" and (lo_hi is None or lo_hi[0] >= 0):
            # Without a declared range the classes are unknown until a pod reads them: a pod
            # sets aside labels outside the outputs (fields.label_domain), never trains on them.
            classes = outputs if lo_hi is None else int(lo_hi[1]) + 1
        else:
            raise _label_error(
                f"cross_entropy needs a class label: {f.name!r} is {f.type}"
                + (" with negative values" if f.type == "int" else "")
                + "."
            )
        if classes != outputs:
            raise _label_error(
                f"{f.name!r} has {classes} classes, the model's output has {outputs}."
            )
        return
    if outputs != 1:
        raise _label_error(f"{loss} takes one output per record, the model has {outputs}.")
    if loss == "bce_with_logits":
        binary = (
            f.type == "bool"
            or (f.type == "categorical" and len(f.values) == 2)
            or (f.type in ("int", "float") and lo_hi is not None and 0 <= lo_hi[0] <= lo_hi[1] <= 1)
        )
        if not binary:
            raise _label_error(
                f"bce_with_logits needs labels in 0..1: {f.name!r} is {f.type}"
                + (" without a range within 0..1" if f.type in ("int", "float") else "")
                + "."
            )
        return
    if f.type == "categorical":
        raise _label_error(f"{loss} needs a numeric label: {f.name!r} is categorical.")


def catalog_schema(raw_fields: Any) -> dict[str, Field]:
    """A category's fields by name (as stored in the catalog)."""
    try:
        return {f.name: f for f in parse_fields(raw_fields)}
    except FieldError as exc:
        raise SpecError("invalid_catalog", f"The catalog entry is invalid: {exc.message}") from None


def check_against_catalog(spec: Any, category_slug: str, raw_fields: Any) -> None:
    """The submission's catalog checks, on the server and offline alike: every feature and the
    label exist, once each; the spec's ``data.schema`` (if any) repeats the catalog exactly; a
    field that is more than a required plain number needs it (the pod encodes by it); and the
    fields fit the model (:func:`check_fit`)."""
    catalog = catalog_schema(raw_fields)
    data = spec.data
    features = list(data.features)
    unknown = [f for f in features if f not in catalog]
    if unknown:
        raise SpecError(
            "unknown_feature",
            f"Feature {unknown[0]!r} is not a field of category {category_slug!r}.",
            "data.features",
        )
    if len(set(features)) != len(features):
        raise SpecError("invalid_value", "A feature is listed twice.", "data.features")
    if data.label is not None and data.label not in catalog:
        raise SpecError(
            "unknown_label",
            f"Label {data.label!r} is not a field of category {category_slug!r}.",
            "data.label",
        )
    if data.label is not None and data.label in features:
        raise SpecError("invalid_value", "The label cannot also be a feature.", "data.label")
    used = [*features, *([data.label] if data.label else [])]
    if data.schema is not None:
        for index, declared in enumerate(data.schema):
            if declared != catalog[declared.name]:
                raise SpecError(
                    "schema_mismatch",
                    f"data.schema's {declared.name!r} differs from the catalog's; copy it "
                    "from the catalog (dataspace-provider check --write-spec does).",
                    f"data.schema[{index}]",
                )
    else:
        typed = [n for n in used if catalog[n].type in ("categorical", "date")]
        if typed:
            raise SpecError(
                "schema_required",
                f"{typed[0]!r} is {catalog[typed[0]].type}: the model depends on how it is "
                "encoded, so the spec must carry the catalog's entries for its fields in "
                "data.schema (dataspace-provider check --write-spec adds them).",
                "data.schema",
            )
    first = spec.layers[0] if spec.layers else None
    check_fit(
        catalog,
        features,
        data.label,
        loss=spec.training.loss,
        output_shape=spec.output_shape,
        input_width=spec.input_width,
        first_layer=(first.type, first.args) if first is not None else None,
    )


def with_schema(spec: Mapping[str, Any], raw_fields: Any) -> dict[str, Any]:
    """A copy of a JSON spec with ``data.schema`` filled from the catalog's fields."""
    catalog = catalog_schema(raw_fields)
    data = dict(spec.get("data") or {})
    used = [*data.get("features", []), *([data["label"]] if data.get("label") else [])]
    data["schema"] = [catalog[n].as_dict() for n in used if n in catalog]
    return {**spec, "data": data}
