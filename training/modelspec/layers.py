"""The allow-listed layers of a model spec: each kind's arguments, how it changes the shape of
what flows through it, and how many parameters it has. Plain Python, no torch."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError
from .readers import boolean as _bool
from .readers import integer as _int
from .readers import number as _num
from .readers import obj as _obj

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerSpec:
    type: str
    args: Mapping[str, Any] = field(default_factory=dict)


BIG = 1 << 20


@dataclass(frozen=True)
class LayerKind:
    args: Mapping[str, Callable[[Any, str], Any]]
    required: tuple[str, ...]
    defaults: Mapping[str, Any]
    shape: Callable[[Mapping[str, Any], Shape, str], Shape]
    params: Callable[[Mapping[str, Any], Shape], int]


def _pos(value: Any, path: str) -> int:
    return _int(value, path, 1, BIG)


def _nonneg(value: Any, path: str) -> int:
    return _int(value, path, 0, BIG)


def _opt_pos(value: Any, path: str) -> int | None:
    return None if value is None else _pos(value, path)


def _mismatch(path: str, message: str) -> SpecError:
    return SpecError("shape_mismatch", message, path)


def _need_dims(shape: Shape, dims: int, path: str, what: str) -> None:
    if len(shape) != dims:
        raise _mismatch(
            path, f"{what} takes an input of {dims} dimension(s), got shape {list(shape)}."
        )


def _linear_shape(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    if not shape or shape[-1] != a["in_features"]:
        raise _mismatch(
            f"{path}.in_features",
            f"in_features is {a['in_features']} but the input has shape {list(shape)}.",
        )
    return (*shape[:-1], a["out_features"])


def _conv_len(length: int, a: Mapping[str, Any], path: str) -> int:
    out = (length + 2 * a["padding"] - a["kernel_size"]) // a["stride"] + 1
    if out < 1:
        raise _mismatch(path, "The kernel is larger than the (padded) input.")
    return int(out)


def _conv_shape(dims: int) -> Callable[[Mapping[str, Any], Shape, str], Shape]:
    def shape_fn(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
        _need_dims(shape, dims + 1, path, f"conv{dims}d")
        if shape[0] != a["in_channels"]:
            raise _mismatch(
                f"{path}.in_channels",
                f"in_channels is {a['in_channels']} but the input has {shape[0]} channels.",
            )
        return (a["out_channels"], *(_conv_len(n, a, path) for n in shape[1:]))

    return shape_fn


def _pool_shape(dims: int) -> Callable[[Mapping[str, Any], Shape, str], Shape]:
    def shape_fn(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
        _need_dims(shape, dims + 1, path, f"pool{dims}d")
        stride = a["stride"] or a["kernel_size"]
        out = [(n - a["kernel_size"]) // stride + 1 for n in shape[1:]]
        if min(out) < 1:
            raise _mismatch(path, "The pooling window is larger than the input.")
        return (shape[0], *out)

    return shape_fn


def _bn_shape(dims: tuple[int, ...]) -> Callable[[Mapping[str, Any], Shape, str], Shape]:
    def shape_fn(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
        if len(shape) not in dims or shape[0] != a["num_features"]:
            raise _mismatch(
                f"{path}.num_features",
                f"num_features is {a['num_features']} but the input has shape {list(shape)}.",
            )
        return shape

    return shape_fn


def _layernorm_args(value: Any, path: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (_pos(value, path),)
    if isinstance(value, list) and 1 <= len(value) <= 4:
        return tuple(_pos(v, f"{path}[{i}]") for i, v in enumerate(value))
    raise SpecError("invalid_value", "Must be a positive whole number or a list of them.", path)


def _layernorm_shape(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    norm = tuple(a["normalized_shape"])
    if shape[len(shape) - len(norm) :] != norm:
        raise _mismatch(
            f"{path}.normalized_shape",
            f"normalized_shape {list(norm)} does not end the input shape {list(shape)}.",
        )
    return shape


def _constants(positive: bool) -> Callable[[Any, str], tuple[float, ...]]:
    def read(value: Any, path: str) -> tuple[float, ...]:
        if not isinstance(value, list) or not 1 <= len(value) <= 4096:
            raise SpecError("invalid_value", "Must be a list of 1 to 4096 numbers.", path)
        return tuple(
            _num(v, f"{path}[{i}]", 0.0 if positive else -BIG, BIG, lo_open=positive)
            for i, v in enumerate(value)
        )

    return read


def _standardize_shape(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    if len(a["mean"]) != len(a["std"]):
        raise SpecError("invalid_value", "mean and std must have the same length.", f"{path}.std")
    if not shape or shape[-1] != len(a["mean"]):
        raise _mismatch(
            path, f"standardize has {len(a['mean'])} constants, the input shape is {list(shape)}."
        )
    return shape


def _unflatten_args(value: Any, path: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        raise SpecError("invalid_value", "Must be a list of 1 to 4 positive whole numbers.", path)
    return tuple(_pos(v, f"{path}[{i}]") for i, v in enumerate(value))


def _unflatten_shape(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    target = tuple(a["shape"])
    if len(shape) != 1 or math.prod(target) != shape[0]:
        raise _mismatch(f"{path}.shape", f"Cannot reshape {list(shape)} into {list(target)}.")
    return target


def _rnn_output(value: Any, path: str) -> str:
    if value not in ("last", "sequence"):
        raise SpecError("invalid_value", "Must be 'last' or 'sequence'.", path)
    return str(value)


def _rnn_shape(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    if len(shape) != 2 or shape[1] != a["input_size"]:
        raise _mismatch(
            f"{path}.input_size",
            f"A recurrent layer takes (sequence, {a['input_size']}), got {list(shape)}.",
        )
    return (a["hidden_size"],) if a["output"] == "last" else (shape[0], a["hidden_size"])


def _rnn_params(gates: int) -> Callable[[Mapping[str, Any], Shape], int]:
    def count(a: Mapping[str, Any], shape: Shape) -> int:
        hidden, total = a["hidden_size"], 0
        for layer in range(a["num_layers"]):
            inputs = a["input_size"] if layer == 0 else hidden
            total += gates * hidden * (inputs + hidden) + (2 * gates * hidden if a["bias"] else 0)
        return total

    return count


def _embedding_shape(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    _need_dims(shape, 1, path, "embedding")
    return (shape[0], a["embedding_dim"])


def _same(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    return shape


def _flatten(a: Mapping[str, Any], shape: Shape, path: str) -> Shape:
    return (math.prod(shape),)


def _none(a: Mapping[str, Any], shape: Shape) -> int:
    return 0


def _dropout_p(value: Any, path: str) -> float:
    return _num(value, path, 0.0, 1.0, hi_open=True)


def _softmax_dim(value: Any, path: str) -> int:
    if value != -1 or isinstance(value, bool):
        raise SpecError("invalid_value", "Softmax is taken over the last dimension (-1).", path)
    return -1


_CONV = {
    "in_channels": _pos,
    "out_channels": _pos,
    "kernel_size": _pos,
    "stride": _pos,
    "padding": _nonneg,
    "bias": _bool,
}
_CONV_DEFAULTS = {"stride": 1, "padding": 0, "bias": True}
_POOL: dict[str, Callable[[Any, str], Any]] = {"kernel_size": _pos, "stride": _opt_pos}
_RNN = {
    "input_size": _pos,
    "hidden_size": _pos,
    "num_layers": lambda v, p: _int(v, p, 1, 8),
    "bias": _bool,
    "output": _rnn_output,
}
_RNN_DEFAULTS = {"num_layers": 1, "bias": True, "output": "last"}

LAYERS: dict[str, LayerKind] = {
    "linear": LayerKind(
        {"in_features": _pos, "out_features": _pos, "bias": _bool},
        ("in_features", "out_features"),
        {"bias": True},
        _linear_shape,
        lambda a, s: a["in_features"] * a["out_features"] + (a["out_features"] if a["bias"] else 0),
    ),
    "conv1d": LayerKind(
        _CONV,
        ("in_channels", "out_channels", "kernel_size"),
        _CONV_DEFAULTS,
        _conv_shape(1),
        lambda a, s: (
            a["out_channels"] * a["in_channels"] * a["kernel_size"]
            + (a["out_channels"] if a["bias"] else 0)
        ),
    ),
    "conv2d": LayerKind(
        _CONV,
        ("in_channels", "out_channels", "kernel_size"),
        _CONV_DEFAULTS,
        _conv_shape(2),
        lambda a, s: (
            a["out_channels"] * a["in_channels"] * a["kernel_size"] ** 2
            + (a["out_channels"] if a["bias"] else 0)
        ),
    ),
    "maxpool1d": LayerKind(_POOL, ("kernel_size",), {"stride": None}, _pool_shape(1), _none),
    "maxpool2d": LayerKind(_POOL, ("kernel_size",), {"stride": None}, _pool_shape(2), _none),
    "avgpool1d": LayerKind(_POOL, ("kernel_size",), {"stride": None}, _pool_shape(1), _none),
    "avgpool2d": LayerKind(_POOL, ("kernel_size",), {"stride": None}, _pool_shape(2), _none),
    "batchnorm1d": LayerKind(
        {"num_features": _pos},
        ("num_features",),
        {},
        _bn_shape((1, 2)),
        lambda a, s: 2 * a["num_features"],
    ),
    "batchnorm2d": LayerKind(
        {"num_features": _pos},
        ("num_features",),
        {},
        _bn_shape((3,)),
        lambda a, s: 2 * a["num_features"],
    ),
    "layernorm": LayerKind(
        {"normalized_shape": _layernorm_args},
        ("normalized_shape",),
        {},
        _layernorm_shape,
        lambda a, s: 2 * math.prod(a["normalized_shape"]),
    ),
    "dropout": LayerKind({"p": _dropout_p}, (), {"p": 0.5}, _same, _none),
    "flatten": LayerKind({}, (), {}, _flatten, _none),
    "unflatten": LayerKind({"shape": _unflatten_args}, ("shape",), {}, _unflatten_shape, _none),
    "embedding": LayerKind(
        {"num_embeddings": _pos, "embedding_dim": _pos},
        ("num_embeddings", "embedding_dim"),
        {},
        _embedding_shape,
        lambda a, s: a["num_embeddings"] * a["embedding_dim"],
    ),
    "gru": LayerKind(
        _RNN, ("input_size", "hidden_size"), _RNN_DEFAULTS, _rnn_shape, _rnn_params(3)
    ),
    "lstm": LayerKind(
        _RNN, ("input_size", "hidden_size"), _RNN_DEFAULTS, _rnn_shape, _rnn_params(4)
    ),
    # (x - mean) / std with constants fixed in the spec: no parameters, nothing trained.
    "standardize": LayerKind(
        {"mean": _constants(False), "std": _constants(True)},
        ("mean", "std"),
        {},
        _standardize_shape,
        _none,
    ),
    "relu": LayerKind({}, (), {}, _same, _none),
    "gelu": LayerKind({}, (), {}, _same, _none),
    "tanh": LayerKind({}, (), {}, _same, _none),
    "sigmoid": LayerKind({}, (), {}, _same, _none),
    "softmax": LayerKind({"dim": _softmax_dim}, (), {"dim": -1}, _same, _none),
}


def read_layer(value: Any, path: str) -> LayerSpec:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise SpecError("malformed_spec", "A layer is an object with a 'type'.", path)
    kind = LAYERS.get(value["type"])
    if kind is None:
        raise SpecError(
            "unknown_layer", f"Layer type {value['type']!r} is not allowed.", f"{path}.type"
        )
    raw = _obj(value, path, ["type", *kind.args], ["type", *kind.required])
    args: dict[str, Any] = dict(kind.defaults)
    for name, reader in kind.args.items():
        if name in raw:
            args[name] = reader(raw[name], f"{path}.{name}")
    return LayerSpec(type=value["type"], args=args)
