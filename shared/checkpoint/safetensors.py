"""The canonical file: a safetensors of the canonical dict, the architecture in its metadata. Framework-free, and
loads straight into torchvision or timm ('format': 'pt')."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping

import numpy as np

from ..preprocessing import Preprocessing
from ..spec import ResNetSpec
from ..weights import canonical_layers
from .formats import FORMATS, Checkpoint
from .record import preprocessing_from_metadata, preprocessing_to_metadata, spec_from_metadata, spec_to_metadata


def read_weights(path: Path, fmt: str = "safetensors", spec: ResNetSpec | None = None) -> Checkpoint:
    """A safetensors file as numpy arrays, with the architecture and preprocessing from its metadata when recorded."""
    from safetensors import safe_open

    _enable_bfloat16()
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata() or {}
        weights = {key: f.get_tensor(key) for key in f.keys()}
    return Checkpoint(weights, spec_from_metadata(metadata, path), FORMATS[fmt],
                      preprocessing=preprocessing_from_metadata(metadata, path))


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str = "safetensors", *, consume: bool = False,
    preprocessing: Preprocessing | None = None,
) -> list[str]:
    """The canonical tensors in forward order, the architecture and ``preprocessing`` in the metadata ('format': 'pt'
    for transformers/timm).

    The file is the canonical layout: there is nothing to release early, so ``consume`` changes nothing.
    """
    from safetensors.numpy import save_file

    _enable_bfloat16()
    keys = [f"{layer.path}.{param}" for layer in canonical_layers(spec) for param in layer.shapes]
    tensors = {key: np.ascontiguousarray(weights[key]) for key in keys}
    recorded = {} if preprocessing is None else preprocessing_to_metadata(preprocessing)
    save_file(tensors, str(path), metadata={"format": "pt", **spec_to_metadata(spec), **recorded})
    return [f"wrote {preprocessing.name} into the metadata of {path.name}"] if preprocessing is not None else []


def _enable_bfloat16() -> None:
    # numpy learns the name 'bfloat16' from ml_dtypes (installed with JAX and TensorFlow)
    with contextlib.suppress(ImportError):
        import ml_dtypes  # noqa: F401
