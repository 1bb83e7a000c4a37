"""Benchmark hooks: our model and Keras's references (keras.applications; the same layers for the presets it lacks).

Both run through ``tensorflow_impl.train``: ``predict`` for eval, ``train_step`` for a training step (a
``tf.function``), so the only difference measured is the model. ``compile`` runs the same functions under
``tf.function(jit_compile=True)``: XLA.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from shared.bench import reference_module
from shared.contract import Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec
from shared.weights import widened

from . import train
from .resnet import build_model
from .weights import inputs

TOTAL_STEPS = 10**6  # the schedule's length: long enough that a benchmark never reaches its end
APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}


def _step(model: keras.Model, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, compile: bool) -> Step:
    if mode == "eval":
        if not compile:
            return lambda: train.predict(model, x, len(x))
        forward = tf.function(lambda batch: model(batch, training=False), jit_compile=True)
        return lambda: widened(forward(inputs(model, x)).numpy())
    optimizer = train.make_optimizer(model, recipe, TOTAL_STEPS)
    if not compile:
        return lambda: train.train_step(model, optimizer, x, y, recipe)
    step = tf.function(train._train_step.python_function, jit_compile=True)

    def compiled() -> tuple[float, np.ndarray]:
        loss, logits = step(model, optimizer, inputs(model, x), tf.constant(np.asarray(y), tf.int64), recipe)
        return float(loss), widened(logits.numpy())

    return compiled


def ours(spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool, dtype: str) -> Step:
    return _step(build_model(spec, dtype=dtype), mode, x, y, recipe, compile)


def references(spec: ResNetSpec, size: int) -> tuple[list[tuple[str, Callable[[], keras.Model]]], list[str]]:
    found, missing = [], []
    base = spec.name.removeprefix("keras_")
    if base in APPLICATIONS and spec.in_channels == 3 and size >= 32:
        app = getattr(keras.applications, APPLICATIONS[base])
        # v1 (the stride on the block's first 1x1, biases on the convs): our keras_ presets; the torchvision
        # presets (v1.5) stride the 3x3 instead, which costs more multiply-adds
        label = f"keras.applications {APPLICATIONS[base]}" + ("" if spec.name.startswith("keras_") else " (v1)")
        found.append((label, lambda: app(weights=None, input_shape=(size, size, 3), classes=spec.num_classes,
                                         classifier_activation=None)))
    module = reference_module("keras_reference")
    if module is None:
        missing.append("no keras.applications-style reference: benchmarks/keras_reference.py is part of a source checkout")
    elif spec.name in module.PRESETS:
        found.append((f"keras.applications-style {spec.name}", lambda: module.functional(spec)))
    if not found:
        missing.append(f"no reference model for {spec.name}")
    return found, missing


def reference_step(build: Callable[[], keras.Model], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe, *, compile: bool) -> Step:
    return _step(build(), mode, x, y, recipe, compile)
