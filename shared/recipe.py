"""The framework-free training recipe: loss, optimizer, learning-rate schedule, named presets.

Every number a training step reads lives here; ``*_impl/train.py`` map it onto each framework's
optimizer once. The definitions follow PyTorch (the reference):

- loss: mean softmax cross-entropy against ``(1 - eps) * one_hot + eps / K`` (label smoothing ``eps``);
- SGD: ``v = momentum * v + g``; ``p -= lr * v`` (Nesterov: ``p -= lr * (g + momentum * v)``), and
  ``weight_decay`` is L2 *added to the gradient* (``g += wd * p``) before the momentum, as
  ``torch.optim.SGD`` does. Keras writes the velocity as ``m * v - lr * g``, equal only while lr is
  constant, and its ``weight_decay`` is decoupled; optax's ``sgd`` is torch's formula;
- Adam: torch's, with ``eps`` added after the bias correction, ``p -= lr / (1 - b1^t) * m /
  (sqrt(v) / sqrt(1 - b2^t) + eps)`` (optax's too; Keras adds eps before it); ``weight_decay`` as for SGD;
- schedule: one multiplier of the base lr per optimizer step (0-based), see ``lr_factor``.

BatchNorm running statistics follow their own conventions, reconciled here by prediction:
PyTorch stores the *unbiased* batch variance in ``running_var`` (factor ``n / (n - 1)``, ``n`` =
values per channel = batch x height x width), Keras and Flax the *biased* one; both update with
``new = (1 - a) * old + a * batch_stat`` where ``a`` is ``spec.bn_momentum`` (Keras/Flax spell their
momentum ``1 - a``). ``convert_running_var`` turns one convention's history into the other's exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import RecipeError
from .spec import ResNetSpec


@dataclass(frozen=True)
class SGD:
    """SGD as torch.optim.SGD: momentum buffer ``v = m * v + g``, L2 ``weight_decay`` added to g."""

    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Adam:
    """Adam as torch.optim.Adam: eps after the bias correction, L2 ``weight_decay`` added to g."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """The learning-rate multiplier per optimizer step; warm-up and decay are counted in steps.

    ``warmup_steps`` ramps linearly, ``(step + 1) / (warmup_steps + 1)``; after it, "constant" keeps 1,
    "step" multiplies by ``gamma`` every ``step_size`` steps, "cosine" falls from 1 towards ``min_factor``,
    reached one step after the run ends (torch's CosineAnnealingLR with ``T_max`` = the decay steps).
    """

    kind: Literal["constant", "step", "cosine"] = "constant"
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "step", "cosine"):
            raise RecipeError(f"unknown schedule {self.kind!r}; choose constant, step or cosine")
        if self.warmup_steps < 0 or self.step_size < 1:
            raise RecipeError("warmup_steps must be >= 0 and step_size >= 1")


@dataclass(frozen=True)
class Recipe:
    """Everything a training run reads besides the data: architecture, optimizer, schedule, loss, length."""

    name: str
    arch: str
    dataset: str
    optimizer: SGD | Adam
    schedule: Schedule = Schedule()
    label_smoothing: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    image_size: int | None = None  # None: the dataset's own size

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RecipeError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.epochs < 1 or self.batch_size < 1:
            raise RecipeError("epochs and batch_size must be >= 1")
        if self.optimizer.lr <= 0:
            raise RecipeError(f"the learning rate must be positive, got {self.optimizer.lr}")

    def replace(self, **overrides) -> Recipe:
        """A copy with fields replaced; ``lr``, ``weight_decay`` go to the optimizer, ``warmup_steps`` to the schedule."""
        opt = {k: overrides.pop(k) for k in ("lr", "weight_decay") if k in overrides}
        sched = {k: overrides.pop(k) for k in ("warmup_steps",) if k in overrides}
        if "schedule" in overrides and isinstance(overrides["schedule"], str):
            sched["kind"] = overrides.pop("schedule")
        recipe = dataclasses.replace(self, **overrides)
        if opt:
            recipe = dataclasses.replace(recipe, optimizer=dataclasses.replace(recipe.optimizer, **opt))
        if sched:
            recipe = dataclasses.replace(recipe, schedule=dataclasses.replace(recipe.schedule, **sched))
        return recipe

    def to_dict(self) -> dict:
        """JSON-able form (the optimizer named by its kind)."""
        out = dataclasses.asdict(self)
        out["optimizer"]["kind"] = type(self.optimizer).__name__.lower()
        return out


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        # The embedded default: reaches >= 90% test accuracy in a few CPU minutes (benchmarks/train_accuracy.py).
        Recipe(
            "digits", "resnet20", "digits",
            SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
            Schedule("cosine", warmup_steps=20), epochs=10, batch_size=64, image_size=32,
        ),
        # d2l "Residual Networks" chapter: ResNet-18 on Fashion-MNIST at 96x96, plain SGD.
        Recipe("d2l", "d2l_resnet18", "fashion_mnist", SGD(lr=0.05), epochs=10, batch_size=256, image_size=96),
        # The TensorFlow seed tutorial: its CIFAR network, Adam at 1e-3, batches of 20.
        Recipe("tf_seed", "seed_tf_cifar", "cifar10", Adam(lr=1e-3), epochs=10, batch_size=20),
    ]
}


# An optimizer's state in canonical names (``Trainer.export_optimizer_state``): 'step', the optimizer steps taken,
# and per parameter each of torch's own slots as '<slot>.<parameter key>' (optax's trace, mu and nu; Keras's
# momentums and velocities). SGD without momentum keeps none.
OPTIMIZER_SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}


def get_recipe(name: str, **overrides) -> Recipe:
    """A named preset with fields replaced (see ``Recipe.replace``)."""
    try:
        recipe = RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
    return recipe.replace(**overrides) if overrides else recipe


def lr_factor(schedule: Schedule, step: int, total_steps: int) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < schedule.warmup_steps:
        return (step + 1) / (schedule.warmup_steps + 1)
    after = step - schedule.warmup_steps
    if schedule.kind == "step":
        return schedule.gamma ** (after // schedule.step_size)
    if schedule.kind == "cosine":
        span = max(total_steps - schedule.warmup_steps, 1)
        t = min(after / span, 1.0)
        return schedule.min_factor + (1.0 - schedule.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def learning_rates(recipe: Recipe, total_steps: int) -> np.ndarray:
    """The learning rate of every step, float64, computed as torch's LambdaLR does: ``base * factor``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    base = recipe.optimizer.lr
    return np.array([base * lr_factor(recipe.schedule, s, total_steps) for s in range(total_steps)], np.float64)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> float:
    """The recipe's loss in numpy (float64): mean over the batch, smoothed targets."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    k = z.shape[1]
    target = np.full(z.shape, label_smoothing / k)
    target[np.arange(len(z)), labels] += 1.0 - label_smoothing
    return float(-(target * log_p).sum(axis=1).mean())


# --------------------------------------------------------------------------- BatchNorm statistics


def bn_sample_counts(spec: ResNetSpec, batch: int, size: int) -> dict[str, int]:
    """Values each BN channel averages over in training (batch x H x W of its input), by BN path.

    Every conv and pool of the family pads so that stride s maps H to ceil(H / s), and ceil(ceil(H / a) / b)
    is ceil(H / (a b)): a BN's input side is ceil(size / its reduction).
    """
    return {norm.path: batch * (-(-size // norm.reduction)) ** 2 for norm in spec.plan().norms()}


Convention = Literal["biased", "unbiased"]


def convert_running_var(
    history: list[np.ndarray], n: int, momentum: float, source: Convention, target: Convention
) -> list[np.ndarray]:
    """Re-express one BN layer's running-variance history (initial value first) in another convention.

    Each step adds ``a * var_batch`` (biased) or ``a * var_batch * n / (n - 1)`` (unbiased) to
    ``(1 - a) * old``; the added term is read off the history and rescaled.
    """
    if source == target:
        return [np.asarray(v, np.float64) for v in history]
    scale = n / (n - 1) if target == "unbiased" else (n - 1) / n
    keep = 1.0 - momentum
    out = [np.asarray(history[0], np.float64)]
    for old, new in zip(history, history[1:]):
        added = np.asarray(new, np.float64) - keep * np.asarray(old, np.float64)
        out.append(keep * out[-1] + scale * added)
    return out
