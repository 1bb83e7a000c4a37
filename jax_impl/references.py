"""Flax's reference model for ``resnet-parity bench`` (optional: bench times ours alone without this
module): the Flax ImageNet example's linen ResNet
(google/flax examples/imagenet/models.py: ``ResNetBlock``, ``BottleneckResNetBlock``, ``ResNet`` with
``conv = partial(nn.Conv, use_bias=False)``, BN momentum 0.9 and epsilon 1e-5, a 7x7 stem padded (3, 3),
'SAME' 3x3 convs and max-pool), plus the same style for the CIFAR presets (a 3x3 stem, no pool, the
option-A shortcut). 'SAME' at stride 2 pads the bottom/right only, so those convs see a shifted window;
the multiply-adds are ours.

Its steps follow the example's train.py: ``jax.value_and_grad`` over ``params`` with mutable
``batch_stats``, ``TrainState.apply_gradients``, under ``jax.jit`` (the example pmaps); the optimizer is
the recipe's chain, built as ``jax_impl.train`` builds it.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

from shared.contract import TOTAL_STEPS, Step
from shared.recipe import SGD, Recipe, learning_rates
from shared.spec import ResNetSpec

ModuleDef = Any
IMAGENET = {"resnet18": ([2, 2, 2, 2], "basic"), "resnet34": ([3, 4, 6, 3], "basic"),
            "resnet50": ([3, 4, 6, 3], "bottleneck"), "resnet101": ([3, 4, 23, 3], "bottleneck"),
            "resnet152": ([3, 8, 36, 3], "bottleneck")}
CIFAR = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")


class ResNetBlock(nn.Module):
    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (1, 1))(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3), self.strides)(y)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class CifarResNetBlock(nn.Module):
    """ResNetBlock with the option-A shortcut: subsample, zero-pad the new channels."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm()(y)
        if residual.shape != y.shape:
            residual = residual[:, :: self.strides[0], :: self.strides[1], :]
            p = (self.filters - residual.shape[-1]) // 2
            residual = jnp.pad(residual, [(0, 0), (0, 0), (0, 0), (p, p)])
        return self.act(residual + y)


class ResNet(nn.Module):
    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32
    act: Callable = nn.relu
    conv: ModuleDef = nn.Conv
    cifar: bool = False

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = partial(self.conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        if self.cifar:
            x = conv(self.num_filters, (3, 3), name="conv_init")(x)
            x = self.act(norm(name="bn_init")(x))
        else:
            x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
            x = self.act(norm(name="bn_init")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2**i, strides=strides, conv=conv, norm=norm, act=self.act)(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return jnp.asarray(x, self.dtype)


class TrainState(train_state.TrainState):
    batch_stats: Any


def model_for(spec: ResNetSpec) -> ResNet:
    if spec.name in CIFAR:
        return ResNet(stage_sizes=list(spec.layers), block_cls=CifarResNetBlock, num_classes=spec.num_classes,
                      num_filters=16, cifar=True)
    stages, block = IMAGENET[spec.name]
    cls = ResNetBlock if block == "basic" else BottleneckResNetBlock
    return ResNet(stage_sizes=stages, block_cls=cls, num_classes=spec.num_classes)


def references(spec: ResNetSpec, size: int) -> tuple[list[tuple[str, Callable[[], ResNet]]], list[str]]:
    if spec.name in IMAGENET or spec.name in CIFAR:
        return [(f"Flax ImageNet example {spec.name}", lambda: model_for(spec))], []
    return [], [f"no reference model for {spec.name}"]


def _tx(recipe: Recipe, total_steps: int) -> optax.GradientTransformation:
    opt = recipe.optimizer
    rates = jnp.asarray(learning_rates(recipe, total_steps))
    schedule = lambda count: rates[jnp.minimum(count, len(rates) - 1)]  # noqa: E731
    tx = (optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov) if isinstance(opt, SGD)
          else optax.adam(schedule, b1=opt.beta1, b2=opt.beta2, eps=opt.eps))
    return optax.chain(optax.add_decayed_weights(opt.weight_decay), tx) if opt.weight_decay else tx


def reference_step(build: Callable[[], ResNet], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe, *, compile: bool) -> Step:
    """The example's eval or train step for one batch, its outputs fetched as ``jax_impl.train`` fetches ours
    (JAX always compiles: ``compile`` changes nothing)."""
    model = build()
    variables = jax.jit(partial(model.init, train=False))(jax.random.PRNGKey(0), jnp.ones((1, *x.shape[1:]), jnp.float32))
    if mode == "eval":
        apply = jax.jit(partial(model.apply, train=False))
        return lambda: np.asarray(apply(variables, jnp.asarray(x)))
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=_tx(recipe, TOTAL_STEPS),
                              batch_stats=variables["batch_stats"])

    @jax.jit
    def train_step(state, images, labels):
        def loss_fn(params):
            logits, new_model_state = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, images, mutable=["batch_stats"])
            targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype),
                                          recipe.label_smoothing)
            return optax.softmax_cross_entropy(logits, targets).mean(), (new_model_state, logits)

        (loss, (new_model_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads, batch_stats=new_model_state["batch_stats"]), loss, logits

    holder = {"state": state}

    def run() -> tuple[float, np.ndarray]:
        holder["state"], loss, logits = train_step(holder["state"], jnp.asarray(x), jnp.asarray(y))
        return float(loss), np.asarray(logits)

    return run
