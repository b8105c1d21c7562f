"""Validate a JSON model spec against the allow-list, propagate shapes, count parameters.

No torch here: validation is plain Python so a malformed spec costs nothing to refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .card_fields import FIELDS as CARD_FIELDS
from .card_fields import CardFields, card_fields
from .datafit import check_schema_fit, data_schema, encoded_widths
from .errors import SpecError
from .fields import Field
from .layers import LAYERS, LayerSpec, Shape, read_layer
from .readers import integer as _int
from .readers import number as _num
from .readers import obj as _obj
from .readers import text as _str
from .texts import ProviderTexts, validate_texts
from .valuation import ValuationSpec, read_valuation


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
    layers = tuple(read_layer(v, f"model.layers[{i}]") for i, v in enumerate(layers_raw))
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
