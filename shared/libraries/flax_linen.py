"""The Flax ImageNet example's linen ResNet (google/flax ``examples/imagenet/models.py``): its variables
``{'params': ..., 'batch_stats': ...}`` <-> canonical weights. ``jax_impl.checkpoint`` reads and writes the files
(msgpack from ``flax.serialization.to_bytes``, or Orbax); this module knows the names.

The example is torchvision's v1.5 network with two differences a port must keep: its 3x3 convs and its stem
max-pool pad 'SAME' (more at the bottom/right at stride 2) while its 7x7 stem conv pads 3 on each side, and its
blocks are auto-named and numbered across stages (``BottleneckResNetBlock_7`` is layer2.3 of a ResNet-50).
Conv kernels are HWIO and the Dense kernel (in, out); BN scale/bias are params, mean/var batch_stats.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import CheckpointError
from ..infer import closest
from ..spec import ResNetSpec
from ..weights import DENSE_TO_IN_OUT, OIHW_TO_HWIO, WeightMismatchError, canonical_layers, from_canonical, to_canonical
from . import refuse_unless_equal

# canonical parameter -> (collection, Flax variable, permutation canonical -> Flax)
PARAMS = {
    "conv": {"weight": ("params", "kernel", OIHW_TO_HWIO)},
    "bn": {"weight": ("params", "scale", None), "bias": ("params", "bias", None),
           "running_mean": ("batch_stats", "mean", None), "running_var": ("batch_stats", "var", None)},
    "linear": {"weight": ("params", "kernel", DENSE_TO_IN_OUT), "bias": ("params", "bias", None)},
}
BLOCKS = {"basic": "ResNetBlock", "bottleneck": "BottleneckResNetBlock"}  # the example's block classes
# inside a block: canonical module -> the example's name (linen numbers each class's submodules from 0)
IN_BLOCK = {"conv": "Conv_{}", "bn": "BatchNorm_{}", "downsample.0": "conv_proj", "downsample.1": "norm_proj"}
TOP = {"conv1": "conv_init", "bn1": "bn_init", "fc": "Dense_0"}
COLLECTIONS = ("params", "batch_stats")


def module_names(spec: ResNetSpec) -> dict[str, tuple[str, str]]:
    """Canonical module path -> (the example's block or '', its module), for every layer of ``spec``."""
    blocks = {plan.prefix: f"{BLOCKS[spec.block]}_{n}" for n, plan in enumerate(spec.blocks())}
    names = {}
    for layer in canonical_layers(spec):
        if layer.path in TOP:
            names[layer.path] = ("", TOP[layer.path])
            continue
        block, module = re.fullmatch(r"(layer\d+\.\d+)\.(.+)", layer.path).groups()
        m = re.fullmatch(r"(conv|bn)(\d)", module)
        names[layer.path] = (blocks[block], IN_BLOCK[m[1]].format(int(m[2]) - 1) if m else IN_BLOCK[module])
    return names


def example_spec(block: str, stage_sizes: tuple[int, ...], num_filters: int, num_classes: int,
                 in_channels: int) -> ResNetSpec:
    """The network the example builds from its constructor's arguments, as the nearest preset with overrides."""
    return closest(ResNetSpec(
        name="flax_linen", block=block, layers=stage_sizes, widths=tuple(num_filters * 2**i for i in range(len(stage_sizes))),
        strides=(1,) + (2,) * (len(stage_sizes) - 1), stem_width=num_filters, padding="tf_same",
        stem_padding="symmetric", in_channels=in_channels, num_classes=num_classes,
    ))


def spec_from_params(params: Mapping, path: Path) -> ResNetSpec:
    """The example's network that ``params`` belong to: blocks counted per stage where their width changes."""
    found = {(m[1], int(m[2])) for key in params if (m := re.fullmatch(r"(\w*ResNetBlock)_(\d+)", str(key)))}
    kinds = {kind for kind, _ in found}
    if len(kinds) != 1 or kinds - set(BLOCKS.values()) or sorted(n for _, n in found) != list(range(len(found))):
        raise CheckpointError(f"{path}: not the Flax ImageNet example's variables: blocks "
                              f"{', '.join(sorted(f'{k}_{n}' for k, n in found)) or 'none'}")
    kind = kinds.pop()
    try:
        widths = [np.shape(params[f"{kind}_{n}"]["Conv_0"]["kernel"])[-1] for n in range(len(found))]
        stem, head = np.shape(params["conv_init"]["kernel"]), np.shape(params["Dense_0"]["kernel"])
        stages = [1]
        for before, width in zip(widths, widths[1:]):
            if width == before:
                stages[-1] += 1
            else:
                stages.append(1)
        return example_spec(next(b for b, name in BLOCKS.items() if name == kind), tuple(stages), stem[-1], head[-1],
                            stem[2])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not the Flax ImageNet example's variables: no {exc}") from exc


def to_canonical_weights(tree: Mapping, path: Path) -> tuple[dict[str, np.ndarray], ResNetSpec]:
    """Canonical weights and the network from the example's variables (a TrainState's other entries are ignored);
    one WeightMismatchError for every missing, unexpected and mis-shaped variable."""
    if not all(isinstance(tree.get(c), Mapping) for c in COLLECTIONS):
        raise CheckpointError(f"{path}: not the Flax ImageNet example's variables (no 'params' and 'batch_stats')")
    spec = spec_from_params(tree["params"], path)
    leaves = {(c, *keys): value for c in COLLECTIONS for keys, value in _flatten(tree[c])}
    weights, missing, mismatched = {}, [], []
    for layer in canonical_layers(spec):
        block, module = module_names(spec)[layer.path]
        for param in layer.shapes:
            collection, name, perm = PARAMS[layer.kind][param]
            where = (collection, *filter(None, (block, module)), name)
            value = leaves.pop(where, None)
            if value is None:
                missing.append("/".join(where))
            elif perm and np.ndim(value) != len(perm):
                mismatched.append(("/".join(where), np.shape(value), layer.shapes[param]))
            else:
                weights[f"{layer.path}.{param}"] = to_canonical(np.asarray(value), perm)
    if missing or leaves or mismatched:
        raise WeightMismatchError(missing, sorted("/".join(k) for k in leaves), mismatched, context=f"{spec.name}")
    return weights, spec


def _flatten(tree: Mapping, keys: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*keys, str(key)))
        else:
            yield (*keys, str(key)), value


def from_canonical_weights(
    weights: Mapping[str, np.ndarray], spec: ResNetSpec, path: Path, *, consume: bool = False,
) -> dict:
    """The example's variables for ``spec``; refused (naming the fields) where the example builds another network.

    With ``consume``, ``weights`` is emptied as the tree is built."""
    refuse_unless_equal(spec, example_spec(spec.block, spec.layers, spec.stem_width, spec.num_classes,
                                           spec.in_channels), "the Flax ImageNet example", path)
    tree: dict = {c: {} for c in COLLECTIONS}
    names = module_names(spec)
    for layer in canonical_layers(spec):
        for param in layer.shapes:
            collection, name, perm = PARAMS[layer.kind][param]
            node = tree[collection]
            for part in filter(None, names[layer.path]):
                node = node.setdefault(part, {})
            key = f"{layer.path}.{param}"
            node[name] = np.ascontiguousarray(from_canonical(np.asarray(weights.pop(key) if consume else weights[key]), perm))
    return tree
