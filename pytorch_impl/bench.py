"""Benchmark hooks: our model and PyTorch's references (torchvision; a CIFAR ResNet in its style), run alike.

Both run through ``pytorch_impl.train``: ``predict`` for eval, ``train_step`` for a training step, so the
only difference measured is the model. ``compile`` wraps the model in ``torch.compile`` (its default mode).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from shared.bench import reference_module
from shared.contract import Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from . import train
from .resnet import build_model

TOTAL_STEPS = 10**6  # the schedule's length: long enough that a benchmark never reaches its end


def _step(model: nn.Module, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, compile: bool) -> Step:
    run = torch.compile(model) if compile else model
    if mode == "eval":
        return lambda: train.predict(run, x, len(x))
    optimizer = train.make_optimizer(model, recipe, TOTAL_STEPS)
    return lambda: train.train_step(run, optimizer, x, y, recipe)


def ours(spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool, dtype: str) -> Step:
    return _step(build_model(spec, dtype=dtype), mode, x, y, recipe, compile)


def references(spec: ResNetSpec, size: int) -> tuple[list[tuple[str, Callable[[], nn.Module]]], list[str]]:
    module = reference_module("torch_reference")
    if module is None:
        return [], ["no reference: benchmarks/torch_reference.py is part of a source checkout"]
    return module.references(spec, size)


def reference_step(build: Callable[[], nn.Module], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe, *, compile: bool) -> Step:
    return _step(build(), mode, x, y, recipe, compile)
