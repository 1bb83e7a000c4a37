"""Keras <-> canonical weights: conv kernels HWIO, dense kernels (in, out), BN gamma/beta/moving stats."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import numpy as np
import tensorflow as tf

from shared.errors import ParityInputError
from shared.weights import (
    DENSE_TO_IN_OUT, OIHW_TO_HWIO, OIK_TO_KIO, ParamTable, check_weights, from_canonical, mapped_variables, to_canonical, widened,
)

from .resnet import ResNet

PARAMS: ParamTable = {
    "conv": {"weight": ("kernel", OIHW_TO_HWIO), "bias": ("bias", None)},
    "conv1d": {"weight": ("kernel", OIK_TO_KIO)},
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


def inputs(model: ResNet, x: np.ndarray) -> tf.Tensor:
    """An NHWC numpy batch as the model takes it: NHWC, the model's compute dtype."""
    return tf.constant(np.asarray(x), dtype=model.dtype_policy.compute_dtype)


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """The stem's, every block's, the pooled and the logits' outputs for an NHWC numpy batch."""
    return {k: widened(v.numpy()) for k, v in model.forward_features(inputs(model, x), training=training).items()}


@contextlib.contextmanager
def numerics(dtype: str, device: str = "cpu") -> Iterator[dict[str, str]]:
    """Models and ops inside go to ``device``; an exact comparison's settings hold for the duration only:
    no TF32 on GPUs. oneDNN stays as TensorFlow ships it. Op determinism cannot be switched off again
    once on, so it is turned on only for a GPU (CPU kernels are deterministic) and then stays on for
    the process. Yields what was set."""
    kind = device.upper()
    found = tf.config.list_logical_devices(kind)
    if not found:
        raise ParityInputError(f"device {device}: TensorFlow sees no {kind} device here")
    saved = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    settings = {"device": found[0].name, "tf.config.experimental.tensor_float_32_execution": "False"}
    if kind == "GPU":
        tf.config.experimental.enable_op_determinism()
        settings["tf.config.experimental.op_determinism"] = "True (for the rest of the process)"
    try:
        with tf.device(found[0].name):
            yield settings
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(saved)
