"""Benchmark hooks: our model's step, and the step every PyTorch model runs alike (``references.py``'s too).

Both run through ``pytorch_impl.train``: ``predict`` for eval, ``train_step`` for a training step, so the
only difference measured is the model. ``compile`` wraps the model in ``torch.compile`` (its default mode).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shared.contract import TOTAL_STEPS, Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from . import train
from .resnet import build_model


def step(model: nn.Module, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, compile: bool) -> Step:
    """``model``'s eval or training step for one batch, through the trainer's functions."""
    run = torch.compile(model) if compile else model
    if mode == "eval":
        return lambda: train.predict(run, x, len(x))
    optimizer = train.make_optimizer(model, recipe, TOTAL_STEPS)
    return lambda: train.train_step(run, optimizer, x, y, recipe)


def ours(spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool, dtype: str) -> Step:
    return step(build_model(spec, dtype=dtype), mode, x, y, recipe, compile)
