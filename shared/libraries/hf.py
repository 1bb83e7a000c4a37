"""Hugging Face transformers' ResNetForImageClassification: the directory ``save_pretrained`` writes (config.json
and model.safetensors or pytorch_model.bin), or its weights file alone, <-> canonical weights.

The names are the alias table ``shared.weights.HF`` (``shared.checkpoint.Source`` renames them); the architecture
comes from config.json. HF's network is torchvision's: every conv pads k//2 and has no bias, BN has PyTorch's
defaults, the stem max-pool pads with -inf, and a block projects where its shape changes.
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
from ..infer import closest
from ..spec import EXPANSION, ResNetSpec
from ..weights import HF, canonical_layers
from . import refuse_unless_equal

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what save_pretrained writes, newest first
# transformers' ResNetConfig() defaults (microsoft/resnet-50), for keys a config.json leaves out
DEFAULTS = {
    "num_channels": 3, "embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
    "layer_type": "bottleneck", "hidden_act": "relu", "downsample_in_first_stage": False,
    "downsample_in_bottleneck": False, "num_labels": 2,
}


def spec_from_config(config: Mapping, path: Path) -> ResNetSpec:
    """The architecture a config.json describes, as the nearest preset with overrides; CheckpointError (naming
    ``path``) for another model type or a ResNet our spec cannot describe."""
    if config.get("model_type") != "resnet":
        raise CheckpointError(f"{path}: a Hugging Face {config.get('model_type')!r} model, not a ResNet "
                              "(model_type 'resnet')")
    c = {**DEFAULTS, **config}
    if c["hidden_act"] != "relu" or c["layer_type"] not in ("basic", "bottleneck"):
        raise CheckpointError(f"{path}: hidden_act {c['hidden_act']!r} and layer_type {c['layer_type']!r}: "
                              "ResNets here use 'relu' and 'basic' or 'bottleneck' blocks")
    expansion = EXPANSION[c["layer_type"]]
    try:
        # hidden_sizes are the stages' outputs: 4x the bottleneck width
        widths = tuple(int(h) // expansion for h in c["hidden_sizes"])
        if any(w * expansion != h for w, h in zip(widths, c["hidden_sizes"])):
            raise ValueError(f"hidden_sizes {c['hidden_sizes']} are not multiples of {expansion}")
        spec = ResNetSpec(
            name="hf", block=c["layer_type"], layers=tuple(c["depths"]), widths=widths,
            strides=(2 if c["downsample_in_first_stage"] else 1,) + (2,) * (len(widths) - 1),
            stem_width=c["embedding_size"], stride_on="1x1" if c["downsample_in_bottleneck"] else "3x3",
            in_channels=c["num_channels"], num_classes=len(c["id2label"]) if "id2label" in c else c["num_labels"],
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: a ResNet config that describes no ResNet: {one_line(exc)}") from exc
    # HF projects wherever the shape changes; our spec's subsampling shortcut has no weights
    if any(plan.stride != 1 and plan.shortcut == "subsample" for plan in spec.blocks()):
        raise CheckpointError(f"{path}: a stage strides without changing its channels, where HF projects: "
                              "no preset describes that")
    return closest(spec)


def config_from_spec(spec: ResNetSpec) -> dict:
    """The config.json transformers builds ``spec`` from (when it can: see ``write_weights``)."""
    return {
        "architectures": ["ResNetForImageClassification"], "model_type": "resnet",
        "num_channels": spec.in_channels, "embedding_size": spec.stem_width,
        "hidden_sizes": list(spec.stage_widths), "depths": list(spec.layers),
        "layer_type": spec.block, "hidden_act": "relu", "downsample_in_first_stage": spec.strides[0] == 2,
        "downsample_in_bottleneck": spec.stride_on == "1x1", "num_labels": spec.num_classes,
    }


def read_weights(path: Path, fmt: str = "hf", spec: ResNetSpec | None = None) -> Checkpoint:
    """A save_pretrained directory (the architecture from its config.json), or its weights file alone, under HF's
    names; ``spec`` is not needed."""
    recorded, file = None, path
    if path.is_dir():
        config = path / "config.json"
        try:
            recorded = spec_from_config(json.loads(config.read_text()), config)
        except (OSError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{config}: not a readable config.json: {one_line(exc)}") from exc
        file = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if file is None:
            raise CheckpointError(f"{path}: no {' or '.join(WEIGHT_FILES)} beside config.json")
    if file.suffix == ".safetensors":
        weights = safetensors.read_weights(file).weights
    else:
        weights = frameworks.load_checkpoints("torch").read_weights(file, "torch").weights
    if not HF.recognises(weights) and "embedder.embedder.convolution.weight" in weights:
        raise CheckpointError(f"{file}: a headless ResNetModel: no classifier, which every ResNet here ends in")
    return Checkpoint(weights, recorded, FORMATS[fmt], ["the architecture from config.json"] if recorded else [])


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str = "hf", *, consume: bool = False,
) -> None:
    """A directory ``ResNetForImageClassification.from_pretrained`` loads with no missing or unexpected keys:
    config.json and model.safetensors, num_batches_tracked included. ``consume`` changes nothing (same layout)."""
    from safetensors.numpy import save_file

    config = config_from_spec(spec)
    refuse_unless_equal(spec, spec_from_config(config, path), "Hugging Face transformers", path)
    tensors = {}
    for layer in canonical_layers(spec):
        for param in layer.shapes:
            tensors[f"{layer.path}.{param}"] = np.ascontiguousarray(weights[f"{layer.path}.{param}"])
        if layer.kind == "bn":  # transformers reports a state_dict without them as missing keys
            key = f"{layer.path}.num_batches_tracked"
            tensors[key] = np.asarray(weights.get(key, 0), dtype=np.int64)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(HF.from_canonical(tensors), str(path / WEIGHT_FILES[0]), metadata={"format": "pt"})
