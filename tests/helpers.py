"""Helpers more than one test module needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def random_images(spec, size: int | None = None, batch: int = 2, seed: int = 0, dtype="float32") -> np.ndarray:
    """A standard-normal NHWC batch for ``spec``: 64x64 for the ImageNet presets, the preset's own size below that."""
    size = size or min(spec.image_size, 64)
    return np.random.default_rng(seed).standard_normal((batch, size, size, spec.in_channels)).astype(dtype)


def as_torch(weights: dict) -> dict:
    """Canonical numpy weights as a torch state_dict (tensors sharing the arrays' memory)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}


def torch_save(obj, path: Path) -> Path:
    """``torch.save``, as torchvision users write their checkpoints; returns the path."""
    import torch

    torch.save(obj, path)
    return path
