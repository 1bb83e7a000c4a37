"""Keras's reference models for ``resnet-parity bench`` (optional: bench times ours alone without this module):
keras.applications' ResNet50/101/152 and, for the functions keras.applications lacks, the same function as
ours written as keras.applications' resnet.py writes its ResNets (functional API; ``ZeroPadding2D`` and a
'valid' ``Conv2D`` where a stride-2 conv needs PyTorch's symmetric padding, 'same' at stride 1;
``BatchNormalization``, ``Activation``, ``Add``, ``GlobalAveragePooling2D``, ``Dense``). Both run through
``tensorflow_impl.bench.step``, as ours does.
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np
from keras import layers, ops

from shared.contract import Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from .bench import step

APPLICATIONS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
IMAGENET = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CIFAR = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")
PRESETS = IMAGENET + CIFAR


def _conv(x, filters, kernel, stride, name):
    if stride > 1 and kernel > 1:  # Keras's 'same' pads more at the bottom/right at stride 2
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        return layers.Conv2D(filters, kernel, stride, padding="valid", use_bias=False, name=name)(x)
    return layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)


def _bn(x, name):
    return layers.BatchNormalization(axis=3, momentum=0.9, epsilon=1e-5, name=name)(x)


def _basic(x, prefix, planes, stride, shortcut):
    identity = x
    out = layers.Activation("relu")(_bn(_conv(x, planes, 3, stride, f"{prefix}_conv1"), f"{prefix}_bn1"))
    out = _bn(_conv(out, planes, 3, 1, f"{prefix}_conv2"), f"{prefix}_bn2")
    if shortcut == "projection":
        identity = _bn(_conv(x, planes, 1, stride, f"{prefix}_proj"), f"{prefix}_proj_bn")
    elif shortcut == "pad":  # option A
        p = (planes - x.shape[-1]) // 2
        identity = layers.Lambda(lambda t: ops.pad(t[:, ::stride, ::stride, :], [[0, 0], [0, 0], [0, 0], [p, p]]),
                                 name=f"{prefix}_pad_shortcut")(x)
    return layers.Activation("relu")(layers.Add()([identity, out]))


def _bottleneck(x, prefix, planes, stride, shortcut):
    identity = x
    out = layers.Activation("relu")(_bn(_conv(x, planes, 1, 1, f"{prefix}_conv1"), f"{prefix}_bn1"))
    out = layers.Activation("relu")(_bn(_conv(out, planes, 3, stride, f"{prefix}_conv2"), f"{prefix}_bn2"))
    out = _bn(_conv(out, planes * 4, 1, 1, f"{prefix}_conv3"), f"{prefix}_bn3")
    if shortcut == "projection":
        identity = _bn(_conv(x, planes * 4, 1, stride, f"{prefix}_proj"), f"{prefix}_proj_bn")
    return layers.Activation("relu")(layers.Add()([identity, out]))


def functional(spec: ResNetSpec) -> keras.Model:
    """The preset's function (torchvision's v1.5 ResNets, He et al.'s CIFAR ResNets with option A) as a keras.Model."""
    inp = keras.Input((None, None, spec.in_channels))
    if spec.name in CIFAR:
        x = layers.Activation("relu")(_bn(_conv(inp, 16, 3, 1, "conv1"), "bn1"))
    else:
        x = layers.ZeroPadding2D(3, name="conv1_pad")(inp)
        x = layers.Conv2D(64, 7, 2, use_bias=False, name="conv1")(x)
        x = layers.Activation("relu")(_bn(x, "bn1"))
        # after a ReLU, zero padding before the max-pool equals -inf padding (keras.applications does this)
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, 2, name="pool1_pool")(x)
    block, expansion = (_basic, 1) if spec.block == "basic" else (_bottleneck, 4)
    cin = spec.stem_width
    for s, (n, width, first_stride) in enumerate(zip(spec.layers, spec.widths, spec.strides)):
        for b in range(n):
            stride = first_stride if b == 0 else 1
            changes = stride != 1 or cin != width * expansion
            shortcut = "identity" if not changes else "pad" if spec.shortcut == "pad" else "projection"
            x = block(x, f"layer{s + 1}_{b}", width, stride, shortcut)
            cin = width * expansion
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    bound = 1 / math.sqrt(cin)
    init = keras.initializers.RandomUniform(-bound, bound)
    x = layers.Dense(spec.num_classes, kernel_initializer=init, bias_initializer=init, name="fc")(x)
    return keras.Model(inp, x, name=f"reference_{spec.name}")


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
    if spec.name in PRESETS:
        found.append((f"keras.applications-style {spec.name}", lambda: functional(spec)))
    if not found:
        missing.append(f"no reference model for {spec.name}")
    return found, missing


def reference_step(build: Callable[[], keras.Model], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe, *, compile: bool) -> Step:
    return step(build(), mode, x, y, recipe, compile)
