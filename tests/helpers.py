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


def randomize_torch(net):
    """Every BN tensor of a torch network random from torch's global generator (fresh statistics hide swaps), conv biases too; eval mode."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.1)
    return net.eval()
