"""PyTorch <-> canonical weights. The model's state_dict already uses the canonical names and layouts."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from shared.weights import IGNORED_SUFFIXES, canonical_shapes, check_weights, from_d2l, is_d2l

from .resnet import ResNet


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The canonical dict: torchvision keys and layouts as numpy arrays (no num_batches_tracked)."""
    state = model.state_dict()
    return {k: state[k].detach().cpu().numpy().copy() for k in canonical_shapes(model.spec)}


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights (or the d2l seed's nn.Sequential keys); strict, all problems at once."""
    if is_d2l(weights):
        weights = from_d2l(weights)
    check_weights(model.spec, weights)
    state = model.state_dict()
    with torch.no_grad():
        for key in canonical_shapes(model.spec):
            state[key].copy_(torch.as_tensor(np.asarray(weights[key])))
        for key in weights:
            if key.endswith(IGNORED_SUFFIXES) and key in state:
                state[key].copy_(torch.as_tensor(np.asarray(weights[key])))


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """Every stage's output for an NHWC numpy batch, returned NHWC: layout changes only at this edge."""
    model.train(training)
    dtype = next(model.parameters()).dtype
    with torch.set_grad_enabled(training):
        feats = model.forward_features(torch.as_tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), dtype=dtype))
    return {k: (v.detach().numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.detach().numpy()) for k, v in feats.items()}
