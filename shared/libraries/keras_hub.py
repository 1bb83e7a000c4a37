"""keras-hub's ResNetBackbone and ResNetImageClassifier: the directory ``save_to_preset`` writes (config.json and
model.weights.h5 for the backbone, task.json and task.weights.h5 for the classifier, preprocessor.json for its
ResNetImageClassifierPreprocessor), or the .weights.h5 a whole ResNetImageClassifier saves, <-> canonical weights.
Read and written with h5py and json alone.

keras-hub builds three families from one constructor: v1 (``basic_block``/``bottleneck_block``: torchvision's
network, the stride on the 3x3, unlike keras.applications), v2 (``use_pre_activation``: no conv has a bias, the
max-pool pads with -inf) and vd (``*_block_vd``: a deep stem and ResNet-D's average-pool shortcut; its basic
blocks also project in the first block of stage 1). Every BN has epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1),
every strided conv pads symmetrically.

A Keras 3 weights file keeps each layer's variables in a group named after the layer's class and position
(``layers/conv2d_7/vars``), with the layer's name as an attribute; Keras loads a file by those positions, so a
writer must follow the order Keras saves a functional model in (``saved_order``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ..checkpoint.formats import FORMATS, Checkpoint
from ..checkpoint.native import overclaims
from ..checkpoint.source import mismatch_line
from ..errors import CheckpointError, one_line
from ..infer import closest
from ..preprocessing import Preprocessing
from ..spec import ResNetSpec
from ..weights import (
    DENSE_TO_IN_OUT, OIHW_TO_HWIO, Layer, WeightMismatchError, canonical_layers, from_canonical, to_canonical,
)
from . import json_object, refuse_unless_equal

BACKBONE, CLASSIFIER = "keras_hub>ResNetBackbone", "keras_hub>ResNetImageClassifier"
BLOCK_TYPES = ("basic_block", "bottleneck_block", "basic_block_vd", "bottleneck_block_vd")
# A layer's saved variables in order: (canonical parameter, permutation canonical -> Keras)
KERAS_VARIABLES = {
    "conv": (("weight", OIHW_TO_HWIO),),
    "bn": (("weight", None), ("bias", None), ("running_mean", None), ("running_var", None)),
    "linear": (("weight", DENSE_TO_IN_OUT), ("bias", None)),
}
H5_NAMES = {"conv": "conv2d", "bn": "batch_normalization"}  # Keras names a saved layer's group after its class
CLASSIFIER_BACKBONE = "layers/res_net_backbone/layers"  # where a whole classifier's .weights.h5 keeps the backbone
HEAD = "layers/dense/vars"  # the classifier's Dense layer, 'predictions', in task.weights.h5 or a classifier's file
FLOAT32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
PREPROCESSOR, CONVERTER = "keras_hub>ResNetImageClassifierPreprocessor", "keras_hub>ResNetImageConverter"
PREPROCESSOR_FILE, CONVERTER_FILE = "preprocessor.json", "image_converter.json"  # what save_to_preset writes
# keras.layers.Resizing's interpolations that Preprocessing knows (Pillow's filters of these names)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def spec_from_config(config: Mapping, num_classes: int, path: Path) -> ResNetSpec:
    """The architecture of a ResNetBackbone config (config.json's 'config') with ``num_classes`` classes."""
    try:
        return closest(_spec(config, num_classes))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: a ResNetBackbone config that describes no ResNet here: "
                              f"{one_line(exc)}") from exc


def _spec(config: Mapping, num_classes: int) -> ResNetSpec:
    """The ResNetSpec of a ResNetBackbone config; ValueError (or a lookup error) where it describes none."""
    block_type, preact = config["block_type"], bool(config.get("use_pre_activation", False))
    filters, kernels = list(config["input_conv_filters"]), list(config["input_conv_kernel_sizes"])
    if block_type not in BLOCK_TYPES:
        raise ValueError(f"block_type {block_type!r} is not one of {', '.join(BLOCK_TYPES)}")
    vd = block_type.endswith("_vd")
    if vd and preact:  # keras-hub then skips the average pool and strides nowhere in the shortcut
        raise ValueError("use_pre_activation with a _vd block")
    if len(filters) != len(kernels) or not (kernels == [7] or len(kernels) > 1 and set(kernels) == {3}):
        raise ValueError(f"input_conv_kernel_sizes {kernels}: a 7x7 stem or a deep stem of 3x3s")
    if config["stackwise_num_filters"][0] != 64:
        raise ValueError("keras-hub's first stack has 64 filters")
    return ResNetSpec(
        name="keras_hub", block=block_type.split("_")[0], layers=tuple(config["stackwise_num_blocks"]),
        widths=tuple(config["stackwise_num_filters"]), strides=tuple(config["stackwise_num_strides"]),
        stem="deep" if len(kernels) > 1 else "imagenet", stem_width=filters[-1], stem_widths=tuple(filters[:-1]),
        shortcut="avgpool_projection" if vd else "projection",
        # basic_block_vd projects in every stack's first block; the others where the channels change
        shortcut_at="stage_start" if block_type == "basic_block_vd" else "channel_change",
        shortcut_bn=not preact, conv_bias="none" if preact else "unnormalized", preact=preact,
        in_channels=(config.get("image_shape") or [None, None, 3])[-1] or 3, num_classes=num_classes,
    )


def config_from_spec(spec: ResNetSpec) -> dict:
    """The ResNetBackbone config keras-hub builds ``spec`` from (when it can: see ``write_weights``)."""
    vd = spec.shortcut == "avgpool_projection"
    return {
        "name": "res_net_backbone", "trainable": True, "dtype": FLOAT32,
        "input_conv_filters": [*spec.stem_widths, spec.stem_width],
        "input_conv_kernel_sizes": [3] * len(spec.stem_convs()) if spec.stem == "deep" else [7],
        "stackwise_num_filters": list(spec.widths), "stackwise_num_blocks": list(spec.layers),
        "stackwise_num_strides": list(spec.strides), "block_type": f"{spec.block}_block{'_vd' if vd else ''}",
        "use_pre_activation": spec.preact, "image_shape": [None, None, spec.in_channels],
    }


def layer_names(spec: ResNetSpec) -> dict[str, str]:
    """Canonical module path -> keras-hub layer name, for every layer of ``spec``."""
    last_stem = len(spec.stem_convs())
    shortcut_conv = 1 if spec.shortcut == "avgpool_projection" else 0  # behind the pool, if there is one
    names = {"conv1": "conv1_conv", "bn1": f"conv{last_stem}_bn", "post_bn": "post_bn", "fc": "predictions"}
    for layer in canonical_layers(spec):
        if m := re.fullmatch(r"conv1\.(\d+)", layer.path):  # a deep stem: conv 3i, BN 3i + 1
            i = int(m[1])
            names[layer.path] = f"conv{i // 3 + 1}_{'conv' if i % 3 == 0 else 'bn'}"
        elif m := re.fullmatch(r"layer(\d+)\.(\d+)\.(conv|bn|downsample\.)(\d)", layer.path):
            block, kind, k = f"stack{int(m[1]) - 1}_block{m[2]}", m[3], int(m[4])
            if kind == "conv":
                names[layer.path] = f"{block}_{k}_conv"
            elif kind == "bn":  # v2 names each BN after the conv it precedes
                names[layer.path] = f"{block}_{'pre_activation' if k == 1 else k - 1}_bn" if spec.preact else \
                    f"{block}_{k}_bn"
            else:
                names[layer.path] = f"{block}_0_{'conv' if k == shortcut_conv else 'bn'}"
    return {layer.path: names[layer.path] for layer in canonical_layers(spec)}


def saved_order(spec: ResNetSpec) -> list[Layer]:
    """The backbone's layers in the order Keras saves a functional model's: by depth, and at equal depth in the order
    they were created, so a block's shortcut conv (and BN) comes just before its last conv (and BN)."""
    order: list[Layer] = []
    for layer in canonical_layers(spec):
        if layer.kind == "linear":
            continue
        if ".downsample." in layer.path:
            block = layer.path.split(".downsample.")[0] + "."
            last = max(i for i, other in enumerate(order) if other.kind == layer.kind and other.path.startswith(block))
            order.insert(last, layer)
        else:
            order.append(layer)
    return order


def h5_groups(spec: ResNetSpec) -> dict[str, str]:
    """Keras's group name ('conv2d_7') -> canonical module path, for the backbone's saved layers."""
    counts: dict[str, int] = {}
    groups = {}
    for layer in saved_order(spec):
        base = H5_NAMES[layer.kind]
        n = counts[base] = counts.get(base, -1) + 1
        groups[f"{base}_{n}" if n else base] = layer.path
    return groups


def _arrays(group, path: Path) -> list[np.ndarray]:
    """A Keras 3 'vars' group's arrays in order, each checked against the bytes that store it."""
    out = []
    for i in range(len(group)):
        ds = group[str(i)]
        if overclaims(ds.size * ds.dtype.itemsize, ds.id.get_storage_size()):
            raise CheckpointError(f"{path}: {ds.name} declares more bytes than it stores; refused")
        out.append(np.asarray(ds[()]))
    return out


def _layers(root, spec: ResNetSpec, path: Path) -> dict[str, list[np.ndarray]]:
    """keras-hub layer name -> its arrays, for the backbone groups under ``root`` ('layers/...'); a group without
    the name attribute (older Keras) is named by its position."""
    by_group = {group: layer_names(spec)[module] for group, module in h5_groups(spec).items()}
    out = {}
    for group, item in root.items():
        variables = item.get("vars")
        if variables is None or not len(variables):
            continue
        name = variables.attrs.get("name", by_group.get(group, group))
        out[name.decode() if isinstance(name, bytes) else str(name)] = _arrays(variables, path)
    return out


def to_canonical_weights(layers: Mapping[str, list[np.ndarray]], spec: ResNetSpec, path: Path) -> dict[str, np.ndarray]:
    """Canonical weights from keras-hub layer name -> arrays; one WeightMismatchError for every missing, unexpected
    and mis-counted layer."""
    names = layer_names(spec)
    weights, missing, mismatched = {}, [], []
    for layer in canonical_layers(spec):
        name = names[layer.path]
        if name not in layers:
            missing.append(name)
            continue
        wanted = [(p, perm) for p, perm in KERAS_VARIABLES[layer.kind] if p in layer.shapes]
        arrays = layers[name]
        if len(arrays) != len(wanted) or any(perm and a.ndim != len(perm) for a, (_, perm) in zip(arrays, wanted)):
            mismatched.append((name, tuple(a.shape for a in arrays), tuple(layer.shapes.values())))
            continue
        for array, (param, perm) in zip(arrays, wanted):
            weights[f"{layer.path}.{param}"] = to_canonical(array, perm)
    unexpected = sorted(set(layers) - set(names.values()))
    if missing or unexpected or mismatched:
        raise WeightMismatchError(missing, unexpected, mismatched, context=f"keras-hub {spec.name}")
    return weights


def preprocessing_from_config(converter: Mapping, path: Path) -> tuple[Preprocessing | None, list[str]]:
    """The preprocessing of an ImageConverter config (keras_hub.layers.ImageConverter: resize to image_size, cropping
    to its aspect ratio or squashing, then ``x * scale + offset`` per channel), and notes; None (a note saying why)
    where it does what Preprocessing cannot."""
    c = {"scale": None, "offset": None, "crop_to_aspect_ratio": True, "pad_to_aspect_ratio": False,
         "interpolation": "bilinear", **converter}
    if not c.get("image_size") or c["pad_to_aspect_ratio"] or c["interpolation"] not in INTERPOLATIONS:
        return None, [f"{path}: image_size {c.get('image_size')}, pad_to_aspect_ratio {c['pad_to_aspect_ratio']}, "
                      f"interpolation {c['interpolation']!r}: a preprocessing not read here"]
    try:
        scale = _channels(1.0 if c["scale"] is None else c["scale"])
        offset = _channels(0.0 if c["offset"] is None else c["offset"])
        # x * scale + offset = (x - mean) / std with std = 1 / scale and mean = -offset / scale
        found = Preprocessing(
            "keras-hub ResNetImageConverter", f"recorded in {path.name}", tuple(int(v) for v in c["image_size"]),
            1.0 if c["crop_to_aspect_ratio"] else None, c["interpolation"], "RGB",
            tuple(-o / s for o, s in zip(offset, scale)), tuple(1 / s for s in scale))
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{path}: an image converter without a readable preprocessing: {one_line(exc)}") from exc
    return found, []


def _channels(value) -> list[float]:
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


def preprocessor_config(preprocessing: Preprocessing) -> tuple[dict | None, list[str]]:
    """The ResNetImageClassifierPreprocessor config that does ``preprocessing``, and notes on what it does otherwise;
    None (a note saying why) where keras-hub cannot normalise the same way."""
    p = preprocessing
    if p.channels != "RGB":
        return None, [f"keras-hub's image converter feeds RGB, {p.name} {p.channels}: {PREPROCESSOR_FILE} not written"]
    notes = []
    if p.crop_pct not in (None, 1.0):
        notes.append(f"keras-hub's image converter crops to the aspect ratio only: it keeps the whole shorter side, "
                     f"where {p.name} keeps {p.crop_pct:.1%} of it")
    converter = {
        "module": "keras_hub.src.models.resnet.resnet_image_converter", "class_name": "ResNetImageConverter",
        "config": {"name": "res_net_image_converter", "trainable": True, "dtype": FLOAT32, "image_size": list(p.size),
                   "scale": [1 / s for s in p.std], "offset": [-m / s for m, s in zip(p.mean, p.std)],
                   "interpolation": p.interpolation, "antialias": True,  # Pillow's filters antialias too
                   "crop_to_aspect_ratio": p.crop_pct is not None, "pad_to_aspect_ratio": False,
                   "bounding_box_format": "yxyx"},
        "registered_name": CONVERTER,
    }
    preprocessor = {
        "module": "keras_hub.src.models.resnet.resnet_image_classifier_preprocessor",
        "class_name": "ResNetImageClassifierPreprocessor",
        "config": {"name": "res_net_image_classifier_preprocessor", "trainable": True, "dtype": FLOAT32,
                   "image_converter": converter, "config_file": PREPROCESSOR_FILE},
        "registered_name": PREPROCESSOR,
    }
    return preprocessor, notes


def read_weights(path: Path, fmt: str = "keras-hub", spec: ResNetSpec | None = None) -> Checkpoint:
    """A save_to_preset directory (the architecture from its json files), or a ResNetImageClassifier's .weights.h5,
    which records no architecture: that one needs ``spec``."""
    import h5py

    notes, preprocessing = [], None
    if path.is_dir():
        backbone, task = (json_object(path / name, "a keras-hub config") for name in ("config.json", "task.json"))
        if backbone is None or backbone.get("registered_name") != BACKBONE:
            raise CheckpointError(f"{path / 'config.json'}: a keras-hub {(backbone or {}).get('class_name')}, "
                                  "not a ResNetBackbone")
        if task is None:
            raise CheckpointError(f"{path}: a backbone without its classifier (no task.json), and every ResNet here "
                                  "ends in one")
        head = task.get("config", {})
        if task.get("registered_name") != CLASSIFIER or head.get("pooling", "avg") != "avg":
            raise CheckpointError(f"{path / 'task.json'}: a {task.get('class_name')} with {head.get('pooling')!r} "
                                  "pooling, not a ResNetImageClassifier that averages")
        if head.get("activation") not in (None, "linear"):
            notes.append(f"keras-hub applies {head['activation']} after the classifier; these are the logits before it")
        recorded = spec_from_config(backbone.get("config", {}), head.get("num_classes"), path / "config.json")
        files = [(path / "model.weights.h5", "layers"), (path / "task.weights.h5", None)]
        preprocessor = json_object(path / PREPROCESSOR_FILE, "a keras-hub config")
        if preprocessor is not None:
            converter = (preprocessor.get("config") or {}).get("image_converter") or {}
            if preprocessor.get("registered_name") != PREPROCESSOR or converter.get("registered_name") != CONVERTER:
                notes.append(f"{path / PREPROCESSOR_FILE}: a {preprocessor.get('class_name')}, not a "
                             "ResNetImageClassifierPreprocessor: its preprocessing was not read")
            else:
                preprocessing, more = preprocessing_from_config(converter.get("config") or {}, path / PREPROCESSOR_FILE)
                notes += more
    else:
        if spec is None:
            raise CheckpointError(f"{path}: keras-hub weights record no architecture: pass arch=NAME "
                                  "(a preset directory records it in config.json)")
        recorded, files = spec, [(path, CLASSIFIER_BACKBONE)]
    layers: dict[str, list[np.ndarray]] = {}
    for file, backbone_root in files:
        with h5py.File(file, "r") as h5:
            if backbone_root is not None:
                if backbone_root not in h5:
                    raise CheckpointError(f"{file}: no {backbone_root}: not the weights of a keras-hub ResNet")
                layers.update(_layers(h5[backbone_root], recorded, file))
            if HEAD in h5:
                layers["predictions"] = _arrays(h5[HEAD], file)
    try:
        weights = to_canonical_weights(layers, recorded, path)
    except WeightMismatchError as err:
        raise CheckpointError(f"{path}: weights do not fit {recorded.name}: {mismatch_line(err)}") from err
    return Checkpoint(weights, recorded, FORMATS[fmt], notes, preprocessing)


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str = "keras-hub", *, consume: bool = False,
    preprocessing: Preprocessing | None = None,
) -> list[str]:
    """A preset directory that ``keras_hub.models.ResNetImageClassifier.from_preset`` (and ``ResNetBackbone``) loads,
    ``preprocessing`` as its preprocessor.json where keras-hub can say it (the notes say what it does otherwise).

    The arrays are written as they are converted; with ``consume``, ``weights`` is emptied on the way.
    """
    import h5py

    config = config_from_spec(spec)
    try:
        built = _spec(config, spec.num_classes)
    except ValueError as exc:
        raise CheckpointError(f"{path}: keras-hub has no ResNet like {spec.name}: {one_line(exc)}") from exc
    refuse_unless_equal(spec, built, "keras-hub", path)
    preprocessor, notes = (None, []) if preprocessing is None else preprocessor_config(preprocessing)
    backbone = {"module": "keras_hub.src.models.resnet.resnet_backbone", "class_name": "ResNetBackbone",
                "config": config, "registered_name": BACKBONE}
    task = {"module": "keras_hub.src.models.resnet.resnet_image_classifier", "class_name": "ResNetImageClassifier",
            "config": {"backbone": backbone, "preprocessor": preprocessor, "name": "res_net_image_classifier",
                       "num_classes": spec.num_classes, "pooling": "avg", "activation": None, "dropout": 0.0},
            "registered_name": CLASSIFIER}
    names = layer_names(spec)
    path.mkdir()
    for name, content in (("config.json", backbone), ("task.json", task)):
        (path / name).write_text(json.dumps(content, indent=4) + "\n")
    modules = {layer.path: layer for layer in canonical_layers(spec)}
    parts = [("model.weights.h5", h5_groups(spec).items()), ("task.weights.h5", [("dense", "fc")])]
    for file, groups in parts:
        with h5py.File(path / file, "w") as h5:
            h5.create_group("vars")  # the model's own variables: none
            for group, module in groups:
                layer = modules[module]
                variables = h5.create_group(f"layers/{group}/vars")
                variables.attrs["name"] = names[module]
                params = [(p, perm) for p, perm in KERAS_VARIABLES[layer.kind] if p in layer.shapes]
                for i, (param, perm) in enumerate(params):
                    key = f"{module}.{param}"
                    value = weights.pop(key) if consume else weights[key]
                    variables.create_dataset(str(i), data=np.ascontiguousarray(from_canonical(np.asarray(value), perm)))
    if preprocessor is not None:  # in task.json too: from_preset builds the classifier from that
        (path / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=4) + "\n")
        (path / CONVERTER_FILE).write_text(json.dumps(preprocessor["config"]["image_converter"], indent=4) + "\n")
        notes.insert(0, f"wrote {preprocessing.name} as {PREPROCESSOR_FILE}")
    return notes
