"""Validate a JSON model spec against the allow-list, propagate shapes, count parameters.

No torch here: validation is plain Python so a malformed spec costs nothing to refuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .card_fields import FIELDS as CARD_FIELDS
from .card_fields import CardFields, card_fields
from .datafit import check_schema_fit, data_schema, encoded_widths
from .errors import SpecError
from .fields import Field
from .texts import ProviderTexts, validate_texts
from .valuation import ValuationSpec, read_valuation

Shape = tuple[int, ...]


@dataclass(frozen=True)
class SpecLimits:
    max_parameters: int = 10_000_000
    max_layers: int = 64
    max_weights_bytes: int = 64 * 1024 * 1024
    max_features: int = 4096


@dataclass(frozen=True)
class DataSpec:
    category: str
    features: tuple[str, ...]
    label: str | None
    # The catalog's entries for the features and the label (``data.schema``), which the pod
    # encodes by; None: every feature is one plain number (training/modelspec/fields.py).
    schema: tuple[Field, ...] | None = None

    @property
    def width(self) -> int:
        if self.schema is None:
            return len(self.features)
        by_name = {f.name: f for f in self.schema}
        return sum(by_name[name].width for name in self.features)


@dataclass(frozen=True)
class LayerSpec:
    type: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerSpec:
    type: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainingSpec:
    loss: str
    optimizer: OptimizerSpec
    local_epochs: int
    batch_size: int
    rounds: int
    cohort_size: int
    min_participants: int
    fedprox_mu: float = 0.0
    server_optimizer: Mapping[str, Any] = field(default_factory=lambda: {"type": "fedavg"})
    # How pods train and what they add to the masked vector: FedAvg, SCAFFOLD (control
    # variates) or FedNova (step-normalised updates); see training/modelspec/federated.py.
    algorithm: Mapping[str, Any] = field(default_factory=lambda: {"type": "fedavg"})
    # The local-work budget: at most this many optimizer steps / seconds of training per round
    # (a pod may do less if its device allows less). None: ``local_epochs`` decides alone.
    local_steps: int | None = None
    local_seconds: float | None = None


@dataclass(frozen=True)
class DPSpec:
    clip_norm: float
    noise_multiplier: float
    target_epsilon: float
    delta: float


# Without DP, each pod still clips its update to this L2 norm and caps its example count at this
# (the count weights its update); both bound one pod's influence and are part of the plan.
DEFAULT_UPDATE_CLIP = 10.0
DEFAULT_MAX_EXAMPLES = 1000


@dataclass(frozen=True)
class PrivacySpec:
    secagg_threshold: float
    dp: DPSpec | None
    update_clip: float = DEFAULT_UPDATE_CLIP
    max_examples: int = DEFAULT_MAX_EXAMPLES


@dataclass(frozen=True)
class ModelSpec:
    title: str  # in the spec's own language (``texts`` has every language given)
    purpose: str
    data: DataSpec
    layers: tuple[LayerSpec, ...]
    training: TrainingSpec
    privacy: PrivacySpec
    parameter_count: int
    output_shape: Shape
    card: CardFields
    texts: ProviderTexts
    # Group-level value (optional): the cohort split into groups, each valued (valuation.py).
    valuation: ValuationSpec | None = None

    @property
    def input_width(self) -> int:
        return self.data.width

    @property
    def input_shape(self) -> Shape:
        return (self.data.width,)


LOSSES = ("cross_entropy", "bce_with_logits", "mse")
OPTIMIZERS = ("sgd", "adam")
PURPOSE_CATEGORIES_MAX = 64
REQUIRED_TOP = ("title", "purpose", *CARD_FIELDS, "data", "model", "training", "privacy")

# --- small typed readers ----------------------------------------------------------------------


def _obj(value: Any, path: str, allowed: Sequence[str], required: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError("malformed_spec", f"{path or 'the spec'} must be an object.", path or None)
    for key in value:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise SpecError("unknown_field", f"Unknown field {key!r}.", where)
    for key in required:
        if key not in value:
            where = f"{path}.{key}" if path else key
            raise SpecError("invalid_value", f"Missing required field {key!r}.", where)
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError("invalid_value", "Must be a whole number.", path)
    if not lo <= value <= hi:
        raise SpecError("invalid_value", f"Must be between {lo} and {hi}.", path)
    return int(value)


def _num(
    value: Any, path: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError("invalid_value", "Must be a number.", path)
    number = float(value)
    if not math.isfinite(number):
        raise SpecError("invalid_value", "Must be finite.", path)
    too_low = number <= lo if lo_open else number < lo
    too_high = number >= hi if hi_open else number > hi
    if too_low or too_high:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise SpecError("invalid_value", f"Must be in {left}{lo}, {hi}{right}.", path)
    return number


def _str(value: Any, path: str, max_len: int = 200, *, allow_empty: bool = False) -> str:
    if (
        not isinstance(value, str)
        or (not allow_empty and not value.strip())
        or len(value) > max_len
    ):
        raise SpecError("invalid_value", f"Must be a text of 1 to {max_len} characters.", path)
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError("invalid_value", "Must be true or false.", path)
    return value


# --- layers: arguments, shapes, parameter counts ---------------------------------------------

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


def _layer(value: Any, path: str) -> LayerSpec:
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


# --- the whole spec ----------------------------------------------------------------------------


def _data(value: Any, limits: SpecLimits) -> DataSpec:
    raw = _obj(value, "data", ["category", "features", "label", "schema"], ["category", "features"])
    features = raw["features"]
    if not isinstance(features, list) or not features:
        raise SpecError(
            "invalid_value", "Must be a non-empty list of field names.", "data.features"
        )
    if len(features) > limits.max_features:
        raise SpecError(
            "invalid_value", f"At most {limits.max_features} features.", "data.features"
        )
    names = tuple(_str(f, f"data.features[{i}]") for i, f in enumerate(features))
    label = raw.get("label")
    label = None if label is None else _str(label, "data.label")
    return DataSpec(
        category=_str(raw["category"], "data.category", 100),
        features=names,
        label=label,
        schema=None if raw.get("schema") is None else data_schema(raw["schema"], names, label),
    )


def _optimizer(value: Any) -> OptimizerSpec:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise SpecError(
            "malformed_spec", "The optimizer is an object with a 'type'.", "training.optimizer"
        )
    kind = value["type"]
    if kind not in OPTIMIZERS:
        raise SpecError(
            "unknown_optimizer", f"Optimizer {kind!r} is not allowed.", "training.optimizer.type"
        )
    path = "training.optimizer"
    if kind == "sgd":
        raw = _obj(value, path, ["type", "lr", "momentum", "weight_decay"], ["lr"])
        return OptimizerSpec(
            type=kind,
            lr=_num(raw["lr"], f"{path}.lr", 0.0, 10.0, lo_open=True),
            momentum=_num(raw.get("momentum", 0.0), f"{path}.momentum", 0.0, 1.0, hi_open=True),
            weight_decay=_num(raw.get("weight_decay", 0.0), f"{path}.weight_decay", 0.0, 1.0),
        )
    raw = _obj(value, path, ["type", "lr", "betas", "eps", "weight_decay"], ["lr"])
    betas = raw.get("betas", [0.9, 0.999])
    if not isinstance(betas, list) or len(betas) != 2:
        raise SpecError("invalid_value", "Must be a list of two numbers.", f"{path}.betas")
    return OptimizerSpec(
        type=kind,
        lr=_num(raw["lr"], f"{path}.lr", 0.0, 10.0, lo_open=True),
        betas=(
            _num(betas[0], f"{path}.betas[0]", 0.0, 1.0, hi_open=True),
            _num(betas[1], f"{path}.betas[1]", 0.0, 1.0, hi_open=True),
        ),
        eps=_num(raw.get("eps", 1e-8), f"{path}.eps", 0.0, 1.0, lo_open=True),
        weight_decay=_num(raw.get("weight_decay", 0.0), f"{path}.weight_decay", 0.0, 1.0),
    )


SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
ALGORITHMS = ("fedavg", "scaffold", "fednova")


def _server_optimizer(value: Any) -> dict[str, Any]:
    """Reddi et al. 2021, Algorithm 2 (see server_optim.py); hyper-parameters default to
    server_optim.DEFAULTS, so the stored spec states every value the server will use."""
    from .server_optim import DEFAULTS

    path = "training.server_optimizer"
    if not isinstance(value, dict) or value.get("type") not in SERVER_OPTIMIZERS:
        raise SpecError(
            "unknown_optimizer",
            f"The server optimizer's type is one of {', '.join(SERVER_OPTIMIZERS)}.",
            f"{path}.type" if isinstance(value, dict) else path,
        )
    kind = value["type"]
    defaults = DEFAULTS[kind]
    if kind == "fedavg":
        raw = _obj(value, path, ["type", "lr"], [])
        if "lr" not in raw:
            return {"type": "fedavg"}  # the plain average, as stored before server lr existed
        return {"type": kind, "lr": _num(raw["lr"], f"{path}.lr", 0.0, 10.0, lo_open=True)}
    if kind == "fedavgm":
        raw = _obj(value, path, ["type", "lr", "momentum"], [])
        return {
            "type": kind,
            "lr": _num(raw.get("lr", defaults["lr"]), f"{path}.lr", 0.0, 10.0, lo_open=True),
            "momentum": _num(
                raw.get("momentum", defaults["momentum"]),
                f"{path}.momentum",
                0.0,
                1.0,
                hi_open=True,
            ),
        }
    raw = _obj(value, path, ["type", "lr", "betas", "eps"], [])
    betas = raw.get("betas", defaults["betas"])
    if not isinstance(betas, list) or len(betas) != 2:
        raise SpecError("invalid_value", "Must be a list of two numbers.", f"{path}.betas")
    return {
        "type": kind,
        "lr": _num(raw.get("lr", defaults["lr"]), f"{path}.lr", 0.0, 10.0, lo_open=True),
        "betas": [
            _num(b, f"{path}.betas[{i}]", 0.0, 1.0, hi_open=True) for i, b in enumerate(betas)
        ],
        "eps": _num(raw.get("eps", defaults["eps"]), f"{path}.eps", 0.0, 1.0, lo_open=True),
    }


def _algorithm(value: Any, optimizer: OptimizerSpec) -> dict[str, Any]:
    """``{"type": "fedavg"}``, ``{"type": "scaffold", "control_clip": C}`` (Karimireddy et al.
    2020) or ``{"type": "fednova"}`` (Wang et al. 2020). Both need plain local SGD: SCAFFOLD's
    control variate is (x − y_i)/(K·η_l) and FedNova's step count assumes SGD (with momentum)."""
    path = "training.algorithm"
    if not isinstance(value, dict) or value.get("type") not in ALGORITHMS:
        raise SpecError(
            "unknown_algorithm",
            f"The algorithm's type is one of {', '.join(ALGORITHMS)}.",
            f"{path}.type" if isinstance(value, dict) else path,
        )
    kind = value["type"]
    if kind != "fedavg" and optimizer.type != "sgd":
        raise SpecError(
            "invalid_value", f"{kind} needs the local optimizer 'sgd'.", "training.optimizer.type"
        )
    if kind == "scaffold":
        raw = _obj(value, path, ["type", "control_clip"], [])
        clip = _num(raw.get("control_clip", 100.0), f"{path}.control_clip", 0.0, 1e4, lo_open=True)
        return {"type": kind, "control_clip": clip}
    _obj(value, path, ["type"], [])
    return {"type": kind}


def _training(value: Any) -> TrainingSpec:
    allowed = [
        "loss",
        "optimizer",
        "local_epochs",
        "batch_size",
        "rounds",
        "cohort_size",
        "min_participants",
        "fedprox_mu",
        "server_optimizer",
        "algorithm",
        "local_steps",
        "local_seconds",
    ]
    raw = _obj(value, "training", allowed, allowed[:7])
    if not isinstance(raw["loss"], str) or raw["loss"] not in LOSSES:
        raise SpecError("unknown_loss", f"Loss {raw['loss']!r} is not allowed.", "training.loss")
    cohort = _int(raw["cohort_size"], "training.cohort_size", 2, 100_000)
    minimum = _int(raw["min_participants"], "training.min_participants", 2, 100_000)
    if minimum > cohort:
        raise SpecError(
            "invalid_value",
            "min_participants cannot exceed cohort_size.",
            "training.min_participants",
        )
    optimizer = _optimizer(raw["optimizer"])
    steps = raw.get("local_steps")
    seconds = raw.get("local_seconds")
    return TrainingSpec(
        loss=raw["loss"],
        optimizer=optimizer,
        local_epochs=_int(raw["local_epochs"], "training.local_epochs", 1, 100),
        batch_size=_int(raw["batch_size"], "training.batch_size", 1, 4096),
        rounds=_int(raw["rounds"], "training.rounds", 1, 1000),
        cohort_size=cohort,
        min_participants=minimum,
        fedprox_mu=_num(raw.get("fedprox_mu", 0.0), "training.fedprox_mu", 0.0, 100.0),
        server_optimizer=_server_optimizer(raw.get("server_optimizer", {"type": "fedavg"})),
        algorithm=_algorithm(raw.get("algorithm", {"type": "fedavg"}), optimizer),
        local_steps=None if steps is None else _int(steps, "training.local_steps", 1, 100_000),
        local_seconds=None
        if seconds is None
        else _num(seconds, "training.local_seconds", 0.0, 86_400.0, lo_open=True),
    )


def _privacy(value: Any) -> PrivacySpec:
    raw = _obj(
        value,
        "privacy",
        ["secagg_threshold", "dp", "update_clip", "max_examples"],
        ["secagg_threshold"],
    )
    threshold = _num(raw["secagg_threshold"], "privacy.secagg_threshold", 0.5, 1.0, lo_open=True)
    dp = None
    if raw.get("dp") is not None:
        d = _obj(
            raw["dp"],
            "privacy.dp",
            ["clip_norm", "noise_multiplier", "target_epsilon", "delta"],
            ["clip_norm", "noise_multiplier", "target_epsilon", "delta"],
        )
        dp = DPSpec(
            clip_norm=_num(d["clip_norm"], "privacy.dp.clip_norm", 0.0, 1e6, lo_open=True),
            noise_multiplier=_num(d["noise_multiplier"], "privacy.dp.noise_multiplier", 0.0, 100.0),
            target_epsilon=_num(
                d["target_epsilon"], "privacy.dp.target_epsilon", 0.0, 100.0, lo_open=True
            ),
            delta=_num(d["delta"], "privacy.dp.delta", 0.0, 1.0, lo_open=True, hi_open=True),
        )
    return PrivacySpec(
        secagg_threshold=threshold,
        dp=dp,
        update_clip=_num(
            raw.get("update_clip", DEFAULT_UPDATE_CLIP),
            "privacy.update_clip",
            0.0,
            1e6,
            lo_open=True,
        ),
        max_examples=_int(
            raw.get("max_examples", DEFAULT_MAX_EXAMPLES), "privacy.max_examples", 1, 10_000_000
        ),
    )


def validate_spec(obj: object, limits: SpecLimits | None = None) -> ModelSpec:
    """Check a JSON spec completely; return it typed, or raise :class:`SpecError`."""
    limits = limits or SpecLimits()
    raw = _obj(
        obj,
        "",
        [*REQUIRED_TOP, "language", "purpose_category", "valuation"],
        REQUIRED_TOP,
    )
    texts = validate_texts(raw)
    if "purpose_category" in raw:
        _str(raw["purpose_category"], "purpose_category", PURPOSE_CATEGORIES_MAX)
    card = card_fields(raw)
    data = _data(raw["data"], limits)
    model = _obj(raw["model"], "model", ["layers"], ["layers"])
    layers_raw = model["layers"]
    if not isinstance(layers_raw, list) or not layers_raw:
        raise SpecError("invalid_value", "Must be a non-empty list of layers.", "model.layers")
    if len(layers_raw) > limits.max_layers:
        raise SpecError("too_many_layers", f"At most {limits.max_layers} layers.", "model.layers")
    layers = tuple(_layer(v, f"model.layers[{i}]") for i, v in enumerate(layers_raw))
    shape: Shape = (data.width,)
    parameters = 0
    for index, layer in enumerate(layers):
        kind = LAYERS[layer.type]
        path = f"model.layers[{index}]"
        parameters += kind.params(layer.args, shape)
        try:
            shape = kind.shape(layer.args, shape, path)
        except SpecError as exc:
            if index == 0 and data.schema is not None:
                exc.message += f" {encoded_widths(data)}"
                exc.args = (exc.message,)
            raise
        if parameters > limits.max_parameters:
            raise SpecError(
                "too_many_parameters",
                f"The model has more than {limits.max_parameters} parameters.",
                path,
            )
    training = _training(raw["training"])
    if training.loss == "cross_entropy" and len(shape) != 1:
        raise SpecError(
            "shape_mismatch",
            f"cross_entropy needs a (classes,) output, got {list(shape)}.",
            "training.loss",
        )
    if data.schema is not None:
        check_schema_fit(data, training.loss, shape, (layers[0].type, layers[0].args))
    privacy = _privacy(raw["privacy"])
    if privacy.dp is not None and training.algorithm["type"] != "fedavg":
        # Δc_i would leave the pod without noise; FedNova's rescaling would rescale the noise.
        raise SpecError(
            "invalid_value",
            f"{training.algorithm['type']} is not available with differential privacy.",
            "training.algorithm.type",
        )
    return ModelSpec(
        title=texts.title,
        purpose=texts.purpose,
        data=data,
        layers=layers,
        training=training,
        privacy=privacy,
        parameter_count=parameters,
        output_shape=shape,
        card=card,
        texts=texts,
        valuation=read_valuation(
            raw.get("valuation"),
            cohort_size=training.cohort_size,
            min_participants=training.min_participants,
        ),
    )
