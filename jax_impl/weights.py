"""Flax NNX <-> canonical weights: conv kernels HWIO, dense kernels (in, out), BN scale/bias/mean/var."""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from shared.weights import (
    DENSE_TO_IN_OUT, OIHW_TO_HWIO, ParamTable, check_weights, from_canonical, mapped_variables, to_canonical,
)

from .resnet import ResNet

PARAMS: ParamTable = {
    "conv": {"weight": ("kernel", OIHW_TO_HWIO), "bias": ("bias", None)},
    "bn": {"weight": ("scale", None), "bias": ("bias", None), "running_mean": ("mean", None), "running_var": ("var", None)},
    "linear": {"weight": ("kernel", DENSE_TO_IN_OUT), "bias": ("bias", None)},
}


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The canonical dict (torchvision names and layouts) of a Flax NNX ResNet."""
    return {key: to_canonical(np.asarray(var[...]), perm) for key, var, perm in mapped_variables(model.spec, model, PARAMS)}


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights; strict, every problem reported at once."""
    check_weights(model.spec, weights)
    for key, var, perm in mapped_variables(model.spec, model, PARAMS):
        var[...] = jnp.asarray(from_canonical(np.asarray(weights[key]), perm), dtype=var.dtype)


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """Every stage's output for an NHWC numpy batch."""
    model.train() if training else model.eval()
    x = jnp.asarray(x, dtype=model.conv1.kernel.dtype)
    return {k: np.asarray(v) for k, v in model.forward_features(x).items()}
