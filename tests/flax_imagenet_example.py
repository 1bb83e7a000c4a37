"""The Flax ImageNet example's linen ResNet (google/flax examples/imagenet/models.py) and the TrainState its
train.py checkpoints, rebuilt for the tests from
its documented structure: the same module classes, so linen gives its variables the same auto-names
(``conv_init``, ``bn_init``, ``ResNetBlock_N``/``BottleneckResNetBlock_N`` numbered across stages, ``Conv_k``,
``BatchNorm_k``, ``conv_proj``, ``norm_proj``, ``Dense_0``), and the same function: nn.Conv's default 'SAME'
padding for the block convs and the max-pool, an explicit (3, 3) for the 7x7 stem, BN momentum 0.9 and
epsilon 1e-5, the stride on the 3x3, a projection where a block changes the shape.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from flax.training import train_state


class _Block(nn.Module):
    filters: int
    conv: Any
    norm: Any
    strides: tuple[int, int] = (1, 1)
    # (kernel, output-width multiple, strided) of each conv of the residual branch
    convs: tuple[tuple[int, int, bool], ...] = ()

    @nn.compact
    def __call__(self, x):
        y = x
        for i, (kernel, multiple, strided) in enumerate(self.convs):
            y = self.conv(self.filters * multiple, (kernel, kernel), self.strides if strided else (1, 1))(y)
            last = i == len(self.convs) - 1
            y = self.norm(scale_init=nn.initializers.zeros_init())(y) if last else nn.relu(self.norm()(y))
        if x.shape != y.shape:
            x = self.conv(y.shape[-1], (1, 1), self.strides, name="conv_proj")(x)
            x = self.norm(name="norm_proj")(x)
        return nn.relu(x + y)


class ResNetBlock(_Block):
    convs: tuple[tuple[int, int, bool], ...] = ((3, 1, True), (3, 1, False))


class BottleneckResNetBlock(_Block):
    convs: tuple[tuple[int, int, bool], ...] = ((1, 1, False), (3, 1, True), (1, 4, False))


class ResNet(nn.Module):
    stage_sizes: tuple[int, ...]
    block_cls: Any
    num_classes: int
    num_filters: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(nn.Conv, use_bias=False)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, size in enumerate(self.stage_sizes):
            for j in range(size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2**i, conv=conv, norm=norm, strides=strides)(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class TrainState(train_state.TrainState):
    """What the example's train.py saves with flax.training.checkpoints: step, params, opt_state and these."""

    batch_stats: Any
    dynamic_scale: Any = None
