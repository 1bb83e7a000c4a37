"""timm's ResNets: state_dicts as timm saves them, a .safetensors or a torch.save'd .pth (its training checkpoints
wrap one in {'state_dict': ...}), or the directory ``save_for_hf`` writes (config.json naming the model and its
preprocessing, ``pretrained_cfg``, with model.safetensors or pytorch_model.bin), which ``timm.create_model(
"local-dir:PATH", pretrained=True)`` loads.

timm's names are the canonical ones: torchvision's for resnet18..resnet152 and the ResNeXts and Wide ResNets, and
for ResNet-D (resnet18d..152d) the deep stem's ``conv1.0/.1/.3/.4/.6`` and the shortcut's ``downsample.1/.2``
behind its average pool, and for the SE and ECA gates ``se.fc1/fc2`` and ``se.conv``, which the canonical names took
from timm. So a timm file also reads as plain safetensors or torch, by its keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import frameworks
from ..checkpoint import safetensors
from ..checkpoint.formats import FORMATS, Checkpoint
from ..errors import CheckpointError, one_line
from ..infer import LABELS
from ..preprocessing import Preprocessing
from ..spec import ResNetSpec, differing, get_spec

# timm's model names that are presets here, with the same network: its plain ResNets and ResNet-Ds, torchvision's
# ResNeXts and Wide ResNets (timm builds them under the same names and keys) and its SE and ECA ResNets
MODELS = (
    *(f"resnet{depth}{d}" for d in ("", "d") for depth in (18, 34, 50, 101, 152)),
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "seresnet50", "seresnext50_32x4d", "ecaresnet50d", "ecaresnet50t",
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# where timm's other model families keep their classifier (its ResNets: fc), to say what a file is
OTHER_HEADS = ("head.fc.weight", "head.weight", "classifier.weight", "last_linear.weight")
# timm.data's defaults for pretrained_cfg keys a config leaves out (DEFAULT_CROP_PCT, crop_mode 'center')
DEFAULT_CROP_PCT, INTERPOLATIONS = 0.875, ("nearest", "bilinear", "bicubic")


def model_name(spec: ResNetSpec) -> str | None:
    """The timm model that builds ``spec`` (given its num_classes and in_chans), or None."""
    def fits(name: str) -> bool:
        return not differing(spec, get_spec(name, num_classes=spec.num_classes, in_channels=spec.in_channels), ignore=LABELS)

    return next((name for name in MODELS if fits(name)), None)


def spec_from_config(config: Mapping, path: Path) -> ResNetSpec:
    """The preset a save_for_hf config.json names, with its classes and input channels."""
    name = config.get("architecture")
    if name not in MODELS:
        raise CheckpointError(f"{path}: timm's {name!r} is not one of the ResNets here ({', '.join(MODELS)})")
    args = config.get("model_args") or {}
    channels = args.get("in_chans") or (config.get("pretrained_cfg") or {}).get("input_size", [3])[0]
    return get_spec(name, num_classes=int(config.get("num_classes", 1000)), in_channels=int(channels))


def preprocessing_from_config(cfg: Mapping, path: Path) -> tuple[Preprocessing | None, list[str]]:
    """The preprocessing a pretrained_cfg describes (timm.data.create_transform at eval: the shorter side to
    input_size / crop_pct, the centre cut out, or 'squash'), and notes; None (a note saying why) where it does what
    Preprocessing cannot."""
    if not any(key in cfg for key in ("input_size", "mean", "std")):
        return None, []  # what write_weights writes when it was given no preprocessing
    mode, crop = cfg.get("crop_mode", "center"), cfg.get("crop_pct", DEFAULT_CROP_PCT)
    if cfg.get("interpolation", "bilinear") not in INTERPOLATIONS or mode not in ("center", "squash") \
            or (mode == "squash" and crop != 1.0):
        return None, [f"{path}: pretrained_cfg interpolation {cfg.get('interpolation')!r}, crop_mode {mode!r}, "
                      f"crop_pct {crop}: a preprocessing not read here"]
    try:
        _, height, width = cfg["input_size"]
        found = Preprocessing(
            f"timm pretrained_cfg of {cfg.get('architecture', 'the model')}", f"recorded in {path.name}'s pretrained_cfg",
            (int(height), int(width)), None if mode == "squash" else float(crop), cfg.get("interpolation", "bilinear"),
            "RGB", tuple(255 * float(m) for m in cfg["mean"]), tuple(255 * float(s) for s in cfg["std"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: a pretrained_cfg without a readable preprocessing: {one_line(exc)}") from exc
    return found, []


def pretrained_cfg(preprocessing: Preprocessing, spec: ResNetSpec, name: str) -> tuple[dict | None, list[str]]:
    """The pretrained_cfg keys that make timm.data.create_transform do ``preprocessing`` for ``spec``; None (a note
    saying why) where timm cannot normalise the same way."""
    p = preprocessing
    if p.channels != "RGB":
        return None, [f"timm's transforms feed RGB, {p.name} {p.channels}: no preprocessing written in pretrained_cfg"]
    cfg = {
        "architecture": name, "num_classes": spec.num_classes, "input_size": [spec.in_channels, *p.size],
        "interpolation": p.interpolation, "mean": [m / 255 for m in p.mean], "std": [s / 255 for s in p.std],
        "crop_pct": 1.0 if p.crop_pct is None else p.crop_pct, "crop_mode": "squash" if p.crop_pct is None else "center",
        "first_conv": "conv1" if spec.stem != "deep" else "conv1.0", "classifier": "fc",
    }
    return cfg, []


def read_weights(path: Path, fmt: str = "timm", spec: ResNetSpec | None = None) -> Checkpoint:
    """A timm state_dict file, or a save_for_hf directory (the model from its config.json); ``spec`` is not needed."""
    recorded, file, notes, preprocessing = None, path, [], None
    if path.is_dir():
        config = path / "config.json"
        try:
            found = json.loads(config.read_text())
            recorded = spec_from_config(found, config)
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{config}: not a readable timm config.json: {one_line(exc)}") from exc
        if isinstance(found.get("pretrained_cfg"), dict):
            preprocessing, more = preprocessing_from_config(
                {"architecture": found["architecture"], **found["pretrained_cfg"]}, config)
            notes += more
        file = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if file is None:
            raise CheckpointError(f"{path}: no {' or '.join(WEIGHT_FILES)} beside config.json")
        notes.append(f"the architecture from config.json: timm's {recorded.name}")
    if file.suffix == ".safetensors":
        weights = safetensors.read_weights(file).weights
    else:
        found = frameworks.load_checkpoints("torch").read_weights(file, "torch")
        weights, notes = found.weights, notes + found.notes
    if "fc.weight" not in weights and (head := next((k for k in OTHER_HEADS if k in weights), None)):
        raise CheckpointError(f"{file}: a timm state_dict of another model: its classifier is "
                              f"{head.removesuffix('.weight')}, where timm's ResNets have fc")
    return Checkpoint(weights, recorded, FORMATS[fmt], notes, preprocessing)


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str = "timm", *, consume: bool = False,
    preprocessing: Preprocessing | None = None,
) -> list[str]:
    """A .safetensors or .pth that ``timm.create_model(name, num_classes=..., in_chans=...)`` loads with strict=True,
    or (a path without a suffix) the directory ``save_for_hf`` writes, ``preprocessing`` in its pretrained_cfg."""
    name = model_name(spec)
    if name is None:
        raise CheckpointError(f"{path}: timm has no model for {spec.name} with these fields; its ResNets here: "
                              f"{', '.join(MODELS)}")
    if path.suffix == ".safetensors":
        return safetensors.write_weights(path, weights, spec, preprocessing=preprocessing)
    if path.suffix in (".pth", ".pt", ".bin"):
        frameworks.load_checkpoints("torch").write_weights(path, weights, spec, "torch", consume=consume)
        return [] if preprocessing is None else [f"a timm .pth has no place for preprocessing: prepare inputs as "
                                                 f"{preprocessing.name} does, or write a directory (no suffix)"]
    if path.suffix:
        raise CheckpointError(f"{path}: timm files end in .safetensors or .pth (a path without a suffix: a directory)")
    cfg, notes = (None, []) if preprocessing is None else pretrained_cfg(preprocessing, spec, name)
    config = {"architecture": name, "num_classes": spec.num_classes, "num_features": spec.final_width,
              "global_pool": "avg", "pretrained_cfg": cfg or {"architecture": name, "num_classes": spec.num_classes}}
    if spec.in_channels != 3:
        config["model_args"] = {"in_chans": spec.in_channels}
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    safetensors.write_weights(path / WEIGHT_FILES[0], weights, spec)
    return ([f"wrote {preprocessing.name} into config.json's pretrained_cfg"] if cfg else []) + notes
