"""Benchmark hooks: our model and Flax's reference (the Flax ImageNet example's linen ResNet), run alike.

Ours runs through ``jax_impl.train``: ``predict`` for eval, ``train_step`` for a training step, both
``nnx.jit``-compiled; the reference through the example's own jitted steps (``benchmarks/flax_reference.py``).
JAX always compiles, so ``compile`` changes nothing here.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from shared.bench import reference_module
from shared.contract import Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from . import train
from .resnet import build_model

TOTAL_STEPS = 10**6  # the schedule's length: long enough that a benchmark never reaches its end


def ours(spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool, dtype: str) -> Step:
    model = build_model(spec, dtype=dtype)
    if mode == "eval":
        return lambda: train.predict(model, x, len(x))
    optimizer = train.make_optimizer(model, recipe, TOTAL_STEPS)
    return lambda: train.train_step(model, optimizer, x, y, recipe)


def references(spec: ResNetSpec, size: int) -> tuple[list[tuple[str, Callable[[], Any]]], list[str]]:
    module = reference_module("flax_reference")
    if module is None:
        return [], ["no reference: benchmarks/flax_reference.py is part of a source checkout"]
    return module.references(spec, size)


def reference_step(build: Callable[[], Any], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe, *, compile: bool) -> Step:
    return reference_module("flax_reference").step(build(), mode, x, y, recipe, TOTAL_STEPS)
