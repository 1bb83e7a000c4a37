"""Flax NNX <-> canonical weights: conv kernels HWIO, dense kernels (in, out), BN scale/bias/mean/var."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.errors import ParityInputError
from shared.weights import (
    DENSE_TO_IN_OUT, OIHW_TO_HWIO, OIK_TO_KIO, ParamTable, check_weights, from_canonical, mapped_variables, to_canonical, widened,
)

from .resnet import ResNet

PARAMS: ParamTable = {
    "conv": {"weight": ("kernel", OIHW_TO_HWIO), "bias": ("bias", None)},
    "conv1d": {"weight": ("kernel", OIK_TO_KIO)},
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
    """An NHWC numpy batch as the model takes it: NHWC, the parameters' dtype (mixed precision casts it at the first conv)."""
    return jnp.asarray(np.asarray(x), dtype=model.policy.param_dtype)


@nnx.jit(graph=False)  # tree mode, as in jax_impl.train
def _forward_features(model: ResNet, x: jax.Array) -> dict[str, jax.Array]:
    return model.forward_features(x)


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """The stem's, every block's, the pooled and the logits' outputs for an NHWC numpy batch (compiled once per shape)."""
    model.train(graph=False) if training else model.eval(graph=False)
    return {k: widened(np.asarray(v)) for k, v in _forward_features(model, inputs(model, x)).items()}


@contextlib.contextmanager
def numerics(dtype: str, device: str = "cpu") -> Iterator[dict[str, str]]:
    """Arrays inside go to ``device``; an exact comparison's settings hold for the duration only: matmuls and
    convs at full precision (no TF32 or bfloat16 passes on GPUs), 64-bit JAX when ``dtype`` is float64."""
    try:
        target = jax.local_devices(backend=device)[0]  # this process's: under jax.distributed devices()[0] is process 0's
    except RuntimeError as exc:
        raise ParityInputError(f"device {device}: JAX sees no {device.upper()} device here") from exc
    x64 = dtype == "float64" or jax.config.jax_enable_x64
    with jax.default_device(target), jax.default_matmul_precision("highest"), jax.enable_x64(x64):
        yield {"device": str(target), "jax_default_matmul_precision": "highest", "jax_enable_x64": str(x64)}
