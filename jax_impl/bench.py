"""Benchmark hooks: our model's step.

Ours runs through ``jax_impl.train``: ``predict`` for eval, ``train_step`` for a training step, both
``nnx.jit``-compiled; the reference (``references.py``) through the Flax ImageNet example's own jitted steps.
JAX always compiles, so ``compile`` changes nothing here.
"""

from __future__ import annotations

import numpy as np

from shared.contract import TOTAL_STEPS, Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from . import train
from .resnet import build_model


def ours(spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool, dtype: str) -> Step:
    model = build_model(spec, dtype=dtype)
    if mode == "eval":
        return lambda: train.predict(model, x, len(x))
    optimizer = train.make_optimizer(model, recipe, TOTAL_STEPS)
    return lambda: train.train_step(model, optimizer, x, y, recipe)
