"""Architecture inference: the preset (and overrides) that canonical weights belong to, from keys and shapes alone.

The weights show the block kind, blocks per stage, widths, groups, stem, input channels, classes (no fc: a headless
backbone, num_classes=0) and which layers exist (BN, conv biases, projection shortcuts and where they are, SE or ECA
gates). The relations between them are the spec's (``EXPANSION``, ``bottleneck_width``), and the result is checked
against the shapes ``shared.spec`` derives. They never show
strides, stride placement (v1 on the 1x1 vs v1.5 on the 3x3), padding or BN epsilon: those come
from the closest preset, and ``Inference.notes()`` says which values were taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from .errors import ArchitectureError
from .spec import EXPANSION, PRESETS, PROJECTIONS, ResNetSpec, bottleneck_width
from .weights import IGNORED_SUFFIXES, WeightMismatchError, check_weights

# Differences that make a variant of a preset rather than another network (a new head or input).
MINOR = ("in_channels", "num_classes")
# Differences in kind, not degree: another block, stem or normalisation is further away than another depth.
MAJOR = ("block", "stem", "preact", "batch_norm", "attention")
# Spec fields no weight shape depends on; reported when they decide the network.
UNRECORDED = ("stride_on", "strides", "stride_block", "padding", "stem_padding", "bn_eps")
# Not part of the network itself.
LABELS = ("name", "source", "image_size")


@dataclass(frozen=True)
class Inference:
    """The spec for some weights, the preset it starts from, what differs from it and what was assumed."""

    spec: ResNetSpec
    preset: str
    overrides: dict[str, object]
    assumed: dict[str, object]

    def describe(self) -> str:
        """'resnet50', or 'resnet20 with layers=(4, 4, 4)'."""
        extra = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.preset} with {extra}" if extra else self.preset

    def notes(self) -> list[str]:
        """What a user should know: the inferred architecture and the values the weights do not record."""
        notes = [f"architecture inferred from the weights: {self.describe()}"]
        if self.assumed:
            values = ", ".join(f"{k}={v}" for k, v in self.assumed.items())
            notes.append(f"not recorded in the weights, taken from {self.preset}: {values} (pass arch=NAME to choose)")
        return notes


def observe(weights: Mapping[str, np.ndarray]) -> dict[str, object]:
    """The spec fields that the key set and shapes determine; ArchitectureError if they are not a ResNet's."""
    keys = [k for k in weights if not k.endswith(IGNORED_SUFFIXES)]
    # timm's deep stem is an nn.Sequential: conv1.0, conv1.3, ... (BN and ReLU between)
    deep = "conv1.weight" not in weights and "conv1.0.weight" in weights
    stem_convs = sorted((k for k in keys if re.fullmatch(r"conv1\.\d+\.weight", k) and np.ndim(weights[k]) == 4),
                        key=lambda k: int(k.split(".")[1])) if deep else ["conv1.weight"]
    # no fc: a headless backbone, read as a feature extractor (num_classes=0)
    for key, ndim in ((stem_convs[0], 4), *((("fc.weight", 2),) if "fc.weight" in weights else ())):
        if key not in weights or np.ndim(weights[key]) != ndim:
            start = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            raise ArchitectureError(f"not a ResNet state: no {ndim}-d {key} (keys: {start or 'none'})")
    stem = np.shape(weights[stem_convs[0]])
    if deep:
        shapes = [np.shape(weights[k]) for k in stem_convs]
        if stem_convs != [f"conv1.{3 * i}.weight" for i in range(len(stem_convs))] or any(s[2:] != (3, 3) for s in shapes):
            raise ArchitectureError(f"a stem of {', '.join(stem_convs)}: not a deep stem of 3x3 convs at conv1.0, conv1.3, ...")
    elif stem[2] != stem[3] or stem[2] not in (3, 7):
        raise ArchitectureError(f"conv1 is {stem[2]}x{stem[3]}: neither an ImageNet (7x7) nor a CIFAR (3x3) stem")
    blocks: dict[int, set[int]] = {}
    for key in keys:
        if m := re.match(r"layer(\d+)\.(\d+)\.", key):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    stages = sorted(blocks)
    if not stages or stages != list(range(1, len(stages) + 1)):
        raise ArchitectureError(f"stages {stages or 'none'}: expected layer1, layer2, ... without gaps")
    if any(blocks[s] != set(range(len(blocks[s]))) for s in stages):
        raise ArchitectureError("blocks within a stage are not numbered 0, 1, 2, ...")
    for s in stages:
        if np.ndim(weights.get(f"layer{s}.0.conv1.weight")) != 4:
            raise ArchitectureError(f"no 4-d layer{s}.0.conv1.weight")
    batch_norm = any(k.endswith(".running_mean") for k in keys)
    preact = "post_bn.weight" in weights
    # ResNet-D's shortcut conv is downsample.1, after the pool; a plain projection's downsample.1 is its BN
    pooled = any(k.endswith(".downsample.1.weight") and np.ndim(weights[k]) == 4 for k in keys)
    conv = f"downsample.{1 if pooled else 0}.weight"
    projections = [np.shape(weights[k]) for k in keys if k.endswith(f".{conv}")]
    widths = [np.shape(weights[k])[0] for k in stem_convs]
    block = "bottleneck" if any(k.endswith(".conv3.weight") for k in keys) else "basic"
    observed = {
        "stem": "deep" if deep else "imagenet" if stem[2] == 7 else "cifar",
        "stem_width": widths[-1],
        "stem_widths": tuple(widths[:-1]),
        "in_channels": stem[1],
        "block": block,
        "layers": tuple(len(blocks[s]) for s in stages),
        **_widths(weights, block, len(stages)),
        "attention": "se" if any(k.endswith(".se.fc1.weight") for k in keys) else
                     "eca" if any(k.endswith(".se.conv.weight") for k in keys) else "none",
        "preact": preact,
        "batch_norm": batch_norm,
        "shortcut": "avgpool_projection" if pooled else "projection" if projections else "parameter-free",
        # a projection that keeps the channels sits where a stage starts (keras-hub's basic ResNet-vd)
        "shortcut_at": "stage_start" if any(shape[0] == shape[1] for shape in projections) else "channel_change",
        "num_classes": np.shape(weights["fc.weight"])[0] if "fc.weight" in weights else 0,
    }
    if projections and batch_norm:
        observed["shortcut_bn"] = any(k.endswith(f".downsample.{2 if pooled else 1}.weight") for k in keys)
    if batch_norm:  # without BN every conv has a bias, whatever conv_bias says
        first, last = (k.removesuffix(".weight") for k in (stem_convs[0], stem_convs[-1]))
        if "layer1.0.conv1.bias" in weights:
            observed["conv_bias"] = "all"
        elif f"{first}.bias" in weights and (first != last or not preact):  # a stem conv that BN follows
            observed["conv_bias"] = "stem"
        elif preact and f"{last}.bias" not in weights:  # pre-activation leaves the stem conv without BN
            observed["conv_bias"] = "none"
        else:
            observed["conv_bias"] = "unnormalized"
    return observed


def _widths(weights: Mapping[str, np.ndarray], block: str, stages: int) -> dict[str, object]:
    """``widths``, ``groups`` and ``width_per_group``, read off each stage's first block: its output (the last conv's),
    and a bottleneck's grouped 3x3 conv, (width, width / groups, 3, 3)."""
    last = "conv3" if block == "bottleneck" else "conv2"
    shapes = []
    for s in range(1, stages + 1):
        shape = np.shape(weights.get(f"layer{s}.0.{last}.weight"))
        if len(shape) != 4:
            raise ArchitectureError(f"no 4-d layer{s}.0.{last}.weight")
        shapes.append(shape)
    found: dict[str, object] = {"widths": tuple(shape[0] // EXPANSION[block] for shape in shapes), "groups": 1,
                                "width_per_group": 64}
    grouped = np.shape(weights.get("layer1.0.conv2.weight"))
    if block == "bottleneck" and len(grouped) == 4 and grouped[1] and grouped[0] % grouped[1] == 0:
        groups = grouped[0] // grouped[1]
        width = found["widths"][0]
        # the smallest width_per_group that gives this stage's grouped width (torchvision's int() rounds down)
        per_group = -(-grouped[1] * 64 // width) if width else 64
        if bottleneck_width(width, groups, per_group) == grouped[0]:
            found.update(groups=groups, width_per_group=per_group)
    return found


def differences(preset: ResNetSpec, observed: Mapping[str, object]) -> dict[str, tuple[object, object]]:
    """field -> (preset's value, observed value) for every observed field where they differ."""
    diffs = {}
    for name, value in observed.items():
        have = getattr(preset, name)
        if name == "shortcut" and value == "parameter-free":
            if have in PROJECTIONS:
                diffs[name] = (have, "pad")  # option A, the parameter-free shortcut of He et al. 2016
            continue
        if have != value:
            diffs[name] = (have, value)
    return diffs


def _cost(diffs: Mapping[str, tuple], *, assumed_strides: bool = True) -> float:
    # another stage count also replaces the preset's strides, unless they are known
    restaged = "layers" in diffs and len(diffs["layers"][0]) != len(diffs["layers"][1])
    stages = 3.0 if restaged and assumed_strides else 0.0
    return stages + sum(0.25 if name in MINOR else 2.0 if name in MAJOR else 1.0 for name in diffs)


def _candidate(preset: ResNetSpec, diffs: Mapping[str, tuple]) -> tuple[ResNetSpec, dict[str, object]]:
    overrides = {name: new for name, (_, new) in diffs.items()}
    n = len(overrides.get("layers", preset.layers))
    if n != preset.num_stages and "strides" not in overrides:
        overrides["strides"] = (1,) + (2,) * (n - 1)  # the usual schedule: halve the resolution from stage 2 on
    return preset.replace(**overrides), overrides


def _summary(preset: ResNetSpec, observed: Mapping[str, object]) -> str:
    """'resnet18 (layers (2, 2, 2, 2) -> (3, 4, 6, 3))': a preset and how the weights differ from it."""
    diffs = ", ".join(f"{name} {have} -> {got}" for name, (have, got) in differences(preset, observed).items())
    return f"{preset.name} ({diffs or 'no field differs'})"


def _unrecorded(spec: ResNetSpec, observed: Mapping[str, object]) -> dict[str, object]:
    """The fields that change the computation but no shape, as this spec has them."""
    skip = set(observed) | set(LABELS)
    if observed["shortcut"] == "parameter-free":
        skip.discard("shortcut")  # zero-padding or average-pooling: no weights tell
    return {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in skip}


def infer(weights: Mapping[str, np.ndarray]) -> Inference:
    """The closest preset and the overrides that make it fit ``weights`` exactly; ArchitectureError if none does."""
    observed = observe(weights)
    order = list(PRESETS)
    ranked = sorted(PRESETS.values(), key=lambda p: (_cost(differences(p, observed)), order.index(p.name)))
    best = ranked[0]
    best_cost = _cost(differences(best, observed))
    spec, overrides = _candidate(best, differences(best, observed))
    # equally close presets that would compute differently: the weights cannot decide
    rivals = {}
    for preset in ranked[1:]:
        diffs = differences(preset, observed)
        if _cost(diffs) != best_cost:
            break
        other, _ = _candidate(preset, diffs)
        if _unrecorded(other, observed) != _unrecorded(spec, observed):
            rivals[preset.name] = other
    if rivals:
        differ = sorted({k for o in rivals.values() for k, v in _unrecorded(o, observed).items() if v != getattr(spec, k)})
        names = ", ".join([best.name, *rivals])
        raise ArchitectureError(f"ambiguous: the weights fit {names} equally well, and these differ in "
                                f"{', '.join(differ)}, which weights do not record; pass arch=NAME")
    try:
        check_weights(spec, weights)
    except WeightMismatchError as err:
        closest = "; ".join(_summary(preset, observed) for preset in ranked[:3])
        first = (err.missing + err.unexpected + [m[0] for m in err.mismatched])[:3]
        raise ArchitectureError(f"the weights match no preset: {len(err.missing)} missing, {len(err.unexpected)} "
                                f"unexpected, {len(err.mismatched)} mis-shaped against the closest fit "
                                f"(e.g. {', '.join(first)}); closest presets: {closest}") from err
    assumed = {k: getattr(spec, k) for k in UNRECORDED if k != "stride_on"}
    if spec.block == "bottleneck":
        version = "" if spec.preact else f" ({'v1.5' if spec.stride_on == '3x3' else 'v1'})"
        assumed["stride_on"] = f"{spec.stride_on}{version}"
    if observed["shortcut"] == "parameter-free":
        assumed["shortcut"] = spec.shortcut
    return Inference(spec, best.name, overrides, assumed)


def closest(spec: ResNetSpec) -> ResNetSpec:
    """``spec`` (say, from another library's config) as the nearest preset with the overrides that make it ``spec``."""
    known = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in LABELS}
    order = list(PRESETS)
    best = min(PRESETS.values(), key=lambda p: (_cost(differences(p, known), assumed_strides=False), order.index(p.name)))
    return _candidate(best, differences(best, known))[0]
