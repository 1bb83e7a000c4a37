"""timm's ResNets: state_dicts as timm saves them, a .safetensors or a torch.save'd .pth (its training checkpoints
wrap one in {'state_dict': ...}), or the directory ``save_for_hf`` writes (config.json naming the model, with
model.safetensors or pytorch_model.bin).

timm's names are the canonical ones: torchvision's for resnet18..resnet152, and for ResNet-D (resnet18d..152d)
the deep stem's ``conv1.0/.1/.3/.4/.6`` and the shortcut's ``downsample.1/.2`` behind its average pool, which the
canonical names took from timm. So a timm file also reads as plain safetensors or torch, by its keys.
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
from ..spec import ResNetSpec, differing, get_spec

# timm's model names that are presets here, with the same network
MODELS = tuple(f"resnet{depth}{d}" for d in ("", "d") for depth in (18, 34, 50, 101, 152))
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# where timm's other model families keep their classifier (its ResNets: fc), to say what a file is
OTHER_HEADS = ("head.fc.weight", "head.weight", "classifier.weight", "last_linear.weight")


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


def read_weights(path: Path, fmt: str = "timm", spec: ResNetSpec | None = None) -> Checkpoint:
    """A timm state_dict file, or a save_for_hf directory (the model from its config.json); ``spec`` is not needed."""
    recorded, file, notes = None, path, []
    if path.is_dir():
        config = path / "config.json"
        try:
            recorded = spec_from_config(json.loads(config.read_text()), config)
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{config}: not a readable timm config.json: {one_line(exc)}") from exc
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
    return Checkpoint(weights, recorded, FORMATS[fmt], notes)


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str = "timm", *, consume: bool = False,
) -> None:
    """A .safetensors or .pth that ``timm.create_model(name, num_classes=..., in_chans=...)`` loads with strict=True."""
    if model_name(spec) is None:
        raise CheckpointError(f"{path}: timm has no model for {spec.name} with these fields; its ResNets here: "
                              f"{', '.join(MODELS)}")
    if path.suffix == ".safetensors":
        safetensors.write_weights(path, weights, spec)
    elif path.suffix in (".pth", ".pt", ".bin"):
        frameworks.load_checkpoints("torch").write_weights(path, weights, spec, "torch", consume=consume)
    else:
        raise CheckpointError(f"{path}: timm files end in .safetensors or .pth")
