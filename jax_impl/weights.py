"""Flax NNX <-> canonical weights: conv kernels HWIO, dense kernels (in, out), BN scale/bias/mean/var."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import jax
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
        # a new array, not written into the old one: an nnx.eval_shape model has none to write into;
        # a contiguous copy first, since device_put of a transposed view is several times slower
        var.value = jnp.asarray(np.ascontiguousarray(from_canonical(np.asarray(weights[key]), perm)), dtype=var.dtype)


def inputs(model: ResNet, x: np.ndarray) -> jax.Array:
    """An NHWC numpy batch as the model takes it: NHWC, the model's dtype."""
    return jnp.asarray(np.asarray(x), dtype=model.conv1.kernel.dtype)


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """The stem's, every block's, the pooled and the logits' outputs for an NHWC numpy batch."""
    model.train() if training else model.eval()
    return {k: np.asarray(v) for k, v in model.forward_features(inputs(model, x)).items()}


@contextlib.contextmanager
def numerics(dtype: str) -> Iterator[dict[str, str]]:
    """An exact comparison's settings, for its duration only: matmuls and convs at full precision
    (no TF32 or bfloat16 passes on GPUs), and 64-bit JAX when ``dtype`` is float64. Yields what was set."""
    x64 = dtype == "float64" or jax.config.jax_enable_x64
    with jax.default_matmul_precision("highest"), jax.enable_x64(x64):
        yield {"jax_default_matmul_precision": "highest", "jax_enable_x64": str(x64)}
