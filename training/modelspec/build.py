"""Build a torch ``nn.Sequential`` from a validated spec, and the inverse for providers."""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..shared.kept import Kept
from .errors import SpecError
from .spec import ModelSpec, validate_spec


class IndexEmbedding(nn.Embedding):
    """An embedding that takes the feature vector's values as indices (features are floats)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.long())


class Standardize(nn.Module):
    """``(x - mean) / std`` over the last dimension, with constants from the spec.

    The constants are non-persistent buffers: they are not in the weights file nor in the
    vector secure aggregation adds up.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Any, std: Any) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32), persistent=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return (input - self.mean) / self.std


class _Recurrent:
    output: str

    def _select(self, result: tuple[torch.Tensor, Any]) -> torch.Tensor:
        sequence = result[0]
        return sequence[:, -1, :] if self.output == "last" else sequence


class SequenceGRU(nn.GRU, _Recurrent):
    """GRU (batch first) whose output is the last step or the whole sequence, per the spec."""

    def __init__(self, *, output: str, **kwargs: Any) -> None:
        super().__init__(batch_first=True, **kwargs)
        self.output = output

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return self._select(super().forward(input, hx))


class SequenceLSTM(nn.LSTM, _Recurrent):
    """LSTM (batch first) whose output is the last step or the whole sequence, per the spec."""

    def __init__(self, *, output: str, **kwargs: Any) -> None:
        super().__init__(batch_first=True, **kwargs)
        self.output = output

    def forward(self, input: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return self._select(super().forward(input, hx))


def _make(layer_type: str, a: Mapping[str, Any]) -> nn.Module:
    if layer_type == "standardize":
        return Standardize(a["mean"], a["std"])
    if layer_type == "linear":
        return nn.Linear(a["in_features"], a["out_features"], bias=a["bias"])
    if layer_type in ("conv1d", "conv2d"):
        conv = nn.Conv1d if layer_type == "conv1d" else nn.Conv2d
        return conv(
            a["in_channels"],
            a["out_channels"],
            a["kernel_size"],
            stride=a["stride"],
            padding=a["padding"],
            bias=a["bias"],
        )
    pools: dict[str, type[nn.Module]] = {
        "maxpool1d": nn.MaxPool1d,
        "maxpool2d": nn.MaxPool2d,
        "avgpool1d": nn.AvgPool1d,
        "avgpool2d": nn.AvgPool2d,
    }
    if layer_type in pools:
        return pools[layer_type](a["kernel_size"], stride=a["stride"])
    if layer_type == "batchnorm1d":
        return nn.BatchNorm1d(a["num_features"])
    if layer_type == "batchnorm2d":
        return nn.BatchNorm2d(a["num_features"])
    if layer_type == "layernorm":
        return nn.LayerNorm(list(a["normalized_shape"]))
    if layer_type == "dropout":
        return nn.Dropout(a["p"])
    if layer_type == "flatten":
        return nn.Flatten()
    if layer_type == "unflatten":
        return nn.Unflatten(1, tuple(a["shape"]))
    if layer_type == "embedding":
        return IndexEmbedding(a["num_embeddings"], a["embedding_dim"])
    if layer_type in ("gru", "lstm"):
        rnn = SequenceGRU if layer_type == "gru" else SequenceLSTM
        return rnn(
            input_size=a["input_size"],
            hidden_size=a["hidden_size"],
            num_layers=a["num_layers"],
            bias=a["bias"],
            output=a["output"],
        )
    simple: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    if layer_type in simple:
        return simple[layer_type]()
    if layer_type == "softmax":
        return nn.Softmax(dim=-1)
    raise SpecError("unknown_layer", f"Layer type {layer_type!r} is not allowed.")


def build_module(spec: ModelSpec) -> nn.Sequential:
    return nn.Sequential(*(_make(layer.type, layer.args) for layer in spec.layers))


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | list):
        return list(value)
    raise TypeError(f"{type(value).__name__} in a layer's arguments")


def architecture_key(spec: ModelSpec) -> str:
    """What a built module depends on, as canonical text: the layers (types and arguments).
    Specs are immutable once validated; two specs with the same key build the same module, and
    any difference in a layer (a size, a constant of ``standardize``) makes another key."""
    return json.dumps(
        [[layer.type, layer.args] for layer in spec.layers],
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
        default=_canonical,
    )


# name, shape, dtype, and whether it is a parameter (not a buffer)
TensorLayout = tuple[tuple[str, tuple[int, ...], torch.dtype, bool], ...]
LAYOUTS_KEPT = 64
_layouts: Kept[str, TensorLayout] = Kept(LAYOUTS_KEPT)


def tensor_layout(spec: ModelSpec) -> TensorLayout:
    """The state dict's tensors in order (name, shape, dtype, parameter or buffer), built on
    the meta device once per architecture and process: a build on meta costs about a
    millisecond, and a pod asks for it several times per round (weights check, vectors)."""
    key = architecture_key(spec)
    found = _layouts.get(key)
    if found is not None:
        return found
    with torch.device("meta"):
        module = build_module(spec)
    parameters = {name for name, _ in module.named_parameters()}
    layout = tuple(
        (name, tuple(t.shape), t.dtype, name in parameters)
        for name, t in module.state_dict().items()
    )
    return _layouts.put(key, layout)


def expected_tensors(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every tensor the weights file must hold: name → (shape, dtype) (:func:`tensor_layout`)."""
    return {name: (shape, dtype) for name, shape, dtype, _ in tensor_layout(spec)}


def count_parameters(spec: ModelSpec) -> int:
    return sum(math.prod(shape) for _, shape, _, parameter in tensor_layout(spec) if parameter)


# Modules built earlier and idle, by architecture key (most recently used last), each with its
# size. A round loads the global weights into one instead of building a module: a build's cost
# is mostly its random initialisation, which the weights overwrite at once.
_idle: OrderedDict[str, list[tuple[nn.Sequential, int]]] = OrderedDict()
_idle_lock = threading.Lock()
IDLE_VALUES = 16_000_000  # at most this many values in idle modules (64 MiB of float32)
IDLE_ARCHITECTURES = 4


def _keep_idle(key: str, module: nn.Sequential, size: int) -> None:
    with _idle_lock:
        _idle.setdefault(key, []).append((module, size))
        _idle.move_to_end(key)
        while len(_idle) > IDLE_ARCHITECTURES:
            _idle.popitem(last=False)
        kept = sum(n for modules in _idle.values() for _, n in modules)
        if kept > IDLE_VALUES:
            _idle[key].pop()  # the one just returned: the pool is full
            if not _idle[key]:
                del _idle[key]


@contextmanager
def loaded_module(spec: ModelSpec, state: Mapping[str, torch.Tensor]) -> Iterator[nn.Sequential]:
    """A module of ``spec`` holding ``state`` (every tensor of its state dict: strict), in
    training mode, with no gradient: what ``build_module`` then ``load_state_dict`` give,
    without the random initialisation each time. It is the caller's alone inside the ``with``;
    on leaving it goes back to a small per-process pool for the next use of the same
    architecture (by any thread). Never draws from torch's global random generator."""
    key = architecture_key(spec)
    size = sum(math.prod(shape) for _, shape, _, _ in tensor_layout(spec))
    with _idle_lock:
        idle = _idle.get(key)
        module = idle.pop()[0] if idle else None
    if module is None:
        with torch.random.fork_rng(devices=[]):
            module = build_module(spec)
    try:
        module.load_state_dict(dict(state))
        for p in module.parameters():
            p.grad = None
            p.requires_grad_(True)
        module.train()
        yield module
    finally:
        for p in module.parameters():
            p.grad = None
        _keep_idle(key, module, size)


def _layer_of(module: nn.Module, index: int) -> dict[str, Any]:
    where = f"module[{index}]"
    if isinstance(module, IndexEmbedding):
        return {
            "type": "embedding",
            "num_embeddings": module.num_embeddings,
            "embedding_dim": module.embedding_dim,
        }
    if isinstance(module, Standardize):
        return {
            "type": "standardize",
            "mean": [float(v) for v in module.mean.tolist()],
            "std": [float(v) for v in module.std.tolist()],
        }
    if isinstance(module, SequenceGRU | SequenceLSTM):
        return {
            "type": "gru" if isinstance(module, SequenceGRU) else "lstm",
            "input_size": module.input_size,
            "hidden_size": module.hidden_size,
            "num_layers": module.num_layers,
            "bias": module.bias,
            "output": module.output,
        }
    if type(module) is nn.Linear:
        return {
            "type": "linear",
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
    if type(module) in (nn.Conv1d, nn.Conv2d):
        conv: Any = module
        kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
        if (
            len(set(kernel)) != 1
            or len(set(stride)) != 1
            or isinstance(padding, str)
            or len(set(padding)) != 1
        ):
            raise SpecError("unknown_layer", f"{where}: only square kernels, strides and paddings.")
        if conv.dilation != (1,) * len(kernel) or conv.groups != 1:
            raise SpecError("unknown_layer", f"{where}: dilation and groups are not supported.")
        return {
            "type": "conv1d" if type(module) is nn.Conv1d else "conv2d",
            "in_channels": conv.in_channels,
            "out_channels": conv.out_channels,
            "kernel_size": kernel[0],
            "stride": stride[0],
            "padding": padding[0],
            "bias": conv.bias is not None,
        }
    pools = {
        nn.MaxPool1d: "maxpool1d",
        nn.MaxPool2d: "maxpool2d",
        nn.AvgPool1d: "avgpool1d",
        nn.AvgPool2d: "avgpool2d",
    }
    if type(module) in pools:
        pool: Any = module
        kernel = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
        stride = pool.stride if isinstance(pool.stride, int) else pool.stride[0]
        return {
            "type": pools[type(module)],
            "kernel_size": kernel,
            "stride": None if stride == kernel else stride,
        }
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        bn: Any = module
        return {
            "type": "batchnorm1d" if type(module) is nn.BatchNorm1d else "batchnorm2d",
            "num_features": bn.num_features,
        }
    if type(module) is nn.LayerNorm:
        return {"type": "layernorm", "normalized_shape": list(module.normalized_shape)}
    if type(module) is nn.Dropout:
        return {"type": "dropout", "p": module.p}
    if type(module) is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise SpecError(
                "unknown_layer", f"{where}: Flatten flattens all but the batch dimension."
            )
        return {"type": "flatten"}
    if type(module) is nn.Unflatten:
        if module.dim != 1:
            raise SpecError("unknown_layer", f"{where}: Unflatten reshapes dimension 1 only.")
        return {"type": "unflatten", "shape": list(module.unflattened_size)}
    simple = {nn.ReLU: "relu", nn.GELU: "gelu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
    if type(module) in simple:
        return {"type": simple[type(module)]}
    if type(module) is nn.Softmax and module.dim in (-1,):
        return {"type": "softmax", "dim": -1}
    raise SpecError("unknown_layer", f"{where}: {type(module).__name__} is not allowed.")


def spec_from_sequential(
    module: nn.Sequential,
    *,
    data: dict[str, Any],
    training: dict[str, Any],
    privacy: dict[str, Any],
    title: str,
    purpose: str,
    intended_use: str,
    out_of_scope_uses: list[str],
) -> dict[str, Any]:
    """A provider's helper: the JSON spec of an ``nn.Sequential`` (validated before returning)."""
    layers = [_layer_of(child, i) for i, child in enumerate(module)]
    spec = {
        "title": title,
        "purpose": purpose,
        "intended_use": intended_use,
        "out_of_scope_uses": out_of_scope_uses,
        "data": data,
        "model": {"layers": layers},
        "training": training,
        "privacy": privacy,
    }
    validate_spec(spec)
    return spec
