"""Keras <-> canonical weights: conv kernels HWIO, dense kernels (in, out), BN gamma/beta/moving stats."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from shared.weights import (
    DENSE_TO_IN_OUT, OIHW_TO_HWIO, ParamTable, check_weights, from_canonical, mapped_variables, to_canonical,
)

from .resnet import ResNet

PARAMS: ParamTable = {
    "conv": {"weight": ("kernel", OIHW_TO_HWIO), "bias": ("bias", None)},
    "bn": {"weight": ("gamma", None), "bias": ("beta", None),
           "running_mean": ("moving_mean", None), "running_var": ("moving_variance", None)},
    "linear": {"weight": ("kernel", DENSE_TO_IN_OUT), "bias": ("bias", None)},
}


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The canonical dict (torchvision names and layouts) of a built Keras ResNet."""
    return {key: to_canonical(var.numpy(), perm) for key, var, perm in mapped_variables(model.spec, model, PARAMS)}


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights; strict, every problem reported at once."""
    check_weights(model.spec, weights)
    for key, var, perm in mapped_variables(model.spec, model, PARAMS):
        var.assign(from_canonical(np.asarray(weights[key]), perm).astype(var.dtype))


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """Every stage's output for an NHWC numpy batch."""
    x = np.asarray(x, dtype=model.dtype_policy.compute_dtype)
    return {k: v.numpy() for k, v in model.forward_features(x, training=training).items()}
