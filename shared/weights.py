"""The canonical weight format: torchvision state_dict names and layouts, in numpy.

Everything here is derived from a ``ResNetSpec``; adapters in each framework walk
``canonical_layers(spec)`` and translate one layer kind at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal, Mapping

import numpy as np

from .errors import WeightMismatchError
from .spec import Conv, Linear, Norm, ResNetSpec

LayerKind = Literal["conv", "conv1d", "bn", "linear"]

# The layout permutations, canonical -> Keras/Flax; inverses are derived with np.argsort.
OIHW_TO_HWIO = (2, 3, 1, 0)
OIK_TO_KIO = (2, 1, 0)  # ECA's 1-D conv
DENSE_TO_IN_OUT = (1, 0)

BN_STATS = ("running_mean", "running_var")
BN_STAT_SUFFIXES = tuple(f".{name}" for name in BN_STATS)  # canonical keys that end so are statistics
# Buffers torch keeps that carry no weight; accepted on input, never produced.
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass(frozen=True)
class Layer:
    """One weight-carrying layer: its module path, kind, parameter shapes (canonical layout) and the channels it reads
    (a grouped conv: ``groups`` times its weight's second axis)."""

    path: str
    kind: LayerKind
    shapes: dict[str, tuple[int, ...]]
    in_channels: int


def _layer(module: Conv | Norm | Linear) -> Layer:
    if isinstance(module, Norm):
        return Layer(module.path, "bn", {p: (module.channels,) for p in ("weight", "bias", *BN_STATS)}, module.channels)
    if isinstance(module, Linear):
        shapes = {"weight": (module.out_features, module.in_features), "bias": (module.out_features,)}
        return Layer(module.path, "linear", shapes, module.in_features)
    # a grouped conv's weight holds each output channel's filter over the input channels of its group
    shapes = {"weight": (module.out_channels, module.in_channels // module.groups, *(module.kernel,) * module.dims)}
    if module.bias:
        shapes["bias"] = (module.out_channels,)
    return Layer(module.path, "conv" if module.dims == 2 else "conv1d", shapes, module.in_channels)


def canonical_layers(spec: ResNetSpec) -> list[Layer]:
    """Every weight-carrying layer of ``spec`` in forward order, with torchvision's names (timm's for its variants)."""
    return [_layer(module) for module in spec.plan().modules()]


def canonical_shapes(spec: ResNetSpec) -> dict[str, tuple[int, ...]]:
    """Canonical key -> shape, in forward order."""
    return {f"{l.path}.{p}": s for l in canonical_layers(spec) for p, s in l.shapes.items()}


def count_parameters(spec: ResNetSpec, weights: Mapping[str, np.ndarray] | None = None) -> tuple[int, int]:
    """(trainable parameters, BN running statistics) as torchvision counts them: of ``weights`` where given
    (the spec's tensors among them), else from the spec alone."""
    params = stats = 0
    for key, shape in canonical_shapes(spec).items():
        n = int(np.prod(shape if weights is None else np.shape(weights[key])))
        if key.endswith(BN_STAT_SUFFIXES):
            stats += n
        else:
            params += n
    return params, stats


def split_path(path: str) -> list[str | int]:
    """'layer1.0.conv1' -> ['layer1', 0, 'conv1']: attribute names and list indices."""
    return [int(part) if part.isdigit() else part for part in path.split(".")]


def check_weights(spec: ResNetSpec, weights: Mapping[str, np.ndarray]) -> None:
    """Raise one WeightMismatchError naming every missing, unexpected and mis-shaped key."""
    expected = canonical_shapes(spec)
    given = {k for k in weights if not k.endswith(IGNORED_SUFFIXES)}
    missing = [k for k in expected if k not in given]
    unexpected = sorted(given - set(expected))
    mismatched = [
        (k, tuple(np.shape(weights[k])), expected[k])
        for k in expected
        if k in given and tuple(np.shape(weights[k])) != expected[k]
    ]
    if missing or unexpected or mismatched:
        raise WeightMismatchError(missing, unexpected, mismatched, context=f"architecture {spec.name}")


# ----------------------------------------------------------------------------- other libraries' state_dict names

# (a regex matched at the start of a key, its replacement); the first rule that matches renames the key
Alias = tuple[str, str | Callable[[re.Match], str]]


@dataclass(frozen=True)
class Naming:
    """Another library's state_dict names: the keys that give them away, and the alias tables to and from ours."""

    label: str  # 'a {label} state_dict'
    signature: tuple[str, ...]  # keys every such state_dict holds and a canonical one never does
    aliases: tuple[Alias, ...]  # its names -> canonical
    inverse: tuple[Alias, ...] = ()  # canonical -> its names, for writing; empty: read only

    def recognises(self, weights: Mapping[str, object]) -> bool:
        return all(key in weights for key in self.signature)

    def to_canonical(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return rename(weights, self.aliases)

    def from_canonical(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return rename(weights, self.inverse)


def rename(weights: Mapping[str, np.ndarray], aliases: tuple[Alias, ...]) -> dict[str, np.ndarray]:
    """Each key renamed by the first alias that matches it; a key none matches stays as it is, for
    ``check_weights`` to report with every other problem."""
    out = {}
    for key, value in weights.items():
        for pattern, repl in aliases:
            new, n = re.subn(f"^{pattern}", repl, key, count=1)
            if n:
                key = new
                break
        out[key] = value
    return out


# The seed tutorials' d2l ResNet is nn.Sequential(b1, b2, b3, b4, b5, pool, flatten, Linear):
# b1 = Sequential(conv, BN, ReLU, MaxPool); b2..b5 hold `Residual` blocks whose 1x1
# shortcut conv is called conv3.
D2L = Naming(
    "d2l seed", ("0.0.weight", "7.weight"),
    (
        (r"0\.0\.", "conv1."),
        (r"0\.1\.", "bn1."),
        (r"([1-4])\.(\d+)\.conv3\.", lambda m: f"layer{m[1]}.{m[2]}.downsample.0."),
        (r"([1-4])\.(\d+)\.", lambda m: f"layer{m[1]}.{m[2]}."),
        (r"7\.", "fc."),
    ),
)
# Seed 001's PyTorch networks: conv1 = Sequential(conv, BN, ReLU); stages conv2, conv3, ... hold Blocks whose
# conv1..conv3 are Sequential(conv, BN[, ReLU]) and whose first also has shortcut = Sequential(conv, BN);
# fc = Sequential(Linear).
SEED_TORCH = Naming(
    "seed 001 PyTorch", ("conv2.0.conv1.0.weight", "fc.0.weight"),
    (
        (r"conv1\.0\.", "conv1."),
        (r"conv1\.1\.", "bn1."),
        (r"conv(\d+)\.(\d+)\.conv(\d)\.0\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}."),
        (r"conv(\d+)\.(\d+)\.conv(\d)\.1\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}."),
        (r"conv(\d+)\.(\d+)\.shortcut\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample."),
        (r"fc\.0\.", "fc."),
    ),
)
# Hugging Face transformers' ResNetForImageClassification: stages and their layers count from 0; the
# classifier is Sequential(Flatten, Linear).
_HF_BLOCK = r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\."


def _hf_block(m: re.Match) -> str:
    return f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}."


HF = Naming(
    "Hugging Face ResNetForImageClassification",
    ("resnet.embedder.embedder.convolution.weight", "classifier.1.weight"),
    (
        (r"resnet\.embedder\.embedder\.convolution\.", "conv1."),
        (r"resnet\.embedder\.embedder\.normalization\.", "bn1."),
        (_HF_BLOCK + r"layer\.(\d+)\.convolution\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
        (_HF_BLOCK + r"layer\.(\d+)\.normalization\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
        (_HF_BLOCK + r"shortcut\.convolution\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
        (_HF_BLOCK + r"shortcut\.normalization\.", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
        (r"classifier\.1\.", "fc."),
    ),
    (
        (r"conv1\.", "resnet.embedder.embedder.convolution."),
        (r"bn1\.", "resnet.embedder.embedder.normalization."),
        (r"layer(\d+)\.(\d+)\.conv(\d)\.", lambda m: f"{_hf_block(m)}layer.{int(m[3]) - 1}.convolution."),
        (r"layer(\d+)\.(\d+)\.bn(\d)\.", lambda m: f"{_hf_block(m)}layer.{int(m[3]) - 1}.normalization."),
        (r"layer(\d+)\.(\d+)\.downsample\.0\.", lambda m: f"{_hf_block(m)}shortcut.convolution."),
        (r"layer(\d+)\.(\d+)\.downsample\.1\.", lambda m: f"{_hf_block(m)}shortcut.normalization."),
        (r"fc\.", "classifier.1."),
    ),
)
NAMINGS = {"d2l": D2L, "seed_torch": SEED_TORCH, "hf": HF}


def recognise(weights: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str | None]:
    """``weights`` under canonical names, and the name of the naming (``NAMINGS``) they came in; None if canonical."""
    for name, naming in NAMINGS.items():
        if naming.recognises(weights):
            return naming.to_canonical(weights), name
    return dict(weights), None


def widened(x: np.ndarray) -> np.ndarray:
    """A float16 or bfloat16 array as float32 (exact), for numpy's arithmetic; any other array as it is."""
    return x.astype(np.float32) if x.dtype.name in ("float16", "bfloat16") else x


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b|: the one error measure of the project."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    if not np.isfinite(diff):
        return float("inf")  # NaN or Inf anywhere is a mismatch, never a silent pass
    return diff / scale if scale > 0 else diff


def worst_error(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """The largest per-tensor relative error of ``a`` against ``b`` over ``b``'s keys, and its key."""
    errors = {k: relative_error(a[k], b[k]) for k in b}
    key = max(errors, key=errors.get)
    return errors[key], key


def randomize(spec: ResNetSpec, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Random canonical weights: every tensor, BN statistics included, at a realistic scale.

    Fresh inits hide swapped mean/var or dropped biases (mean 0, var 1, beta 0), so parity
    checks start from this instead.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for layer in canonical_layers(spec):
        for p, shape in layer.shapes.items():
            if layer.kind == "bn":
                value = {
                    "weight": rng.uniform(0.5, 1.5, shape),
                    "bias": rng.normal(0.0, 0.1, shape),
                    "running_mean": rng.normal(0.0, 0.1, shape),
                    "running_var": rng.uniform(0.5, 1.5, shape),
                }[p]
            elif p == "weight":
                fan_in = int(np.prod(shape[1:]))
                value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
            else:
                value = rng.normal(0.0, 0.1, shape)
            out[f"{layer.path}.{p}"] = value.astype(dtype)
    return out


def resolve(root, path: str):
    """The sub-module at a dotted canonical path: names are attributes, numbers index lists."""
    obj = root
    for part in split_path(path):
        obj = obj[part] if isinstance(part, int) else getattr(obj, part)
    return obj


# Per framework: canonical parameter -> (variable attribute, permutation canonical -> framework).
ParamTable = dict[str, dict[str, tuple[str, tuple[int, ...] | None]]]


def mapped_variables(spec: ResNetSpec, model, table: ParamTable):
    """Yield (canonical key, framework variable, permutation) for every tensor of ``spec``."""
    for layer in canonical_layers(spec):
        module = resolve(model, layer.path)
        for param in layer.shapes:
            attr, perm = table[layer.kind][param]
            yield f"{layer.path}.{param}", getattr(module, attr), perm


def to_canonical(value: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(value, np.argsort(perm))) if perm else np.array(value)


def from_canonical(value: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    return np.transpose(value, perm) if perm else np.asarray(value)
