"""Benchmark hooks: our model's step, and the step every Keras model runs alike (``references.py``'s too).

Both run through ``tensorflow_impl.train``: ``predict`` for eval, ``train_step`` for a training step (a
``tf.function``), so the only difference measured is the model. ``compile`` runs the same functions under
``tf.function(jit_compile=True)``: XLA.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from shared.contract import TOTAL_STEPS, Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec
from shared.weights import widened

from . import train
from .resnet import build_model
from .weights import inputs


def step(model: keras.Model, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, compile: bool) -> Step:
    """``model``'s eval or training step for one batch, through the trainer's functions (under XLA with ``compile``)."""
    if mode == "eval":
        if not compile:
            return lambda: train.predict(model, x, len(x))
        forward = tf.function(lambda batch: model(batch, training=False), jit_compile=True)
        return lambda: widened(forward(inputs(model, x)).numpy())
    optimizer = train.make_optimizer(model, recipe, TOTAL_STEPS)
    if not compile:
        return lambda: train.train_step(model, optimizer, x, y, recipe)
    xla_step = tf.function(train._train_step.python_function, jit_compile=True)

    def compiled() -> tuple[float, np.ndarray]:
        loss, logits = xla_step(model, optimizer, inputs(model, x), tf.constant(np.asarray(y), tf.int64), recipe)
        return float(loss), widened(logits.numpy())

    return compiled


def ours(spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool, dtype: str) -> Step:
    return step(build_model(spec, dtype=dtype), mode, x, y, recipe, compile)
