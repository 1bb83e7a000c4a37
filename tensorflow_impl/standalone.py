"""The ResNet as a functional ``keras.Model`` of Keras's own layers and ops: what a ``.keras`` file we write holds, so
that plain ``keras.models.load_model`` rebuilds it where this package is not installed.

``resnet.py``'s model is a subclass (its own Conv2d, BatchNorm and blocks): a file of it loads only where
``tensorflow_impl`` is imported first. This one computes the same function with built-in pieces, and its layers
carry the same canonical names ('layer1.0.conv1'), so the file reads back by name like the subclass's. Where Keras
has no layer for a step, a ``keras.ops`` call in the graph does it (Keras serialises those too): the max-pool's -inf
padding and option A's zero channels. Differences from ``resnet.py``, each the same function: PyTorch's symmetric
padding at stride 2 is a ZeroPadding2D before a 'valid' conv; Keras's BatchNormalization in place of our BatchNorm
(eval mode: the same normalisation, rounded in another order); a grouped conv is Conv2D(groups=g), one op.
"""

from __future__ import annotations

import math
from typing import Mapping

import keras
import numpy as np
from keras import layers, ops

from shared.spec import Attention, BlockPlan, Conv, Norm, ResNetSpec
from shared.weights import canonical_layers, from_canonical, to_canonical

from .weights import PARAMS


def build(spec: ResNetSpec, dtype: str = "float32") -> keras.Model:
    """The functional model of ``spec`` (input NHWC of any size; output logits, a headless backbone's pooled
    features), freshly initialised by Keras; ``dtype`` is the Keras dtype policy of every layer."""
    plan = spec.plan()

    def conv(c: Conv, x):
        # PyTorch pads k//2 on every side; Keras's 'same' does that only at stride 1 (at stride 2 it pads bottom/right)
        explicit = c.padding == "symmetric" and c.stride > 1 and c.kernel > 1
        if explicit:
            x = layers.ZeroPadding2D(c.kernel // 2, name=f"{c.path}.pad", dtype=dtype)(x)
        padding = "valid" if explicit or c.kernel == 1 else "same"
        return layers.Conv2D(c.out_channels, c.kernel, c.stride, padding=padding, groups=c.groups, use_bias=c.bias,
                             name=c.path, dtype=dtype)(x)

    def norm(n: Norm, x):
        if not spec.batch_norm:
            return x
        # Keras momentum is the weight of the old value: 1 - PyTorch's
        return layers.BatchNormalization(momentum=1 - spec.bn_momentum, epsilon=spec.bn_eps, name=n.path, dtype=dtype)(x)

    def relu(x):
        return layers.ReLU(dtype=dtype)(x)

    def add(a, b):
        return layers.Add(dtype=dtype)([a, b])

    def maxpool(x):
        if spec.padding == "tf_same":  # the Flax ImageNet example's 'SAME' max-pool: more at the bottom/right
            return layers.MaxPooling2D(3, 2, "same", dtype=dtype)(x)
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=0.0 if spec.pool_zero_pad else -math.inf)
        return layers.MaxPooling2D(3, 2, "valid", dtype=dtype)(x)

    def shortcut(b: BlockPlan, x):
        if b.shortcut == "identity":
            return x
        if b.projection:
            if b.shortcut == "avgpool_projection" and b.stride > 1:
                # ResNet-D: TensorFlow's 'same' pads bottom/right and leaves the padding out of the average
                x = layers.AveragePooling2D(2, b.stride, "same", name=f"{b.prefix}.downsample.0", dtype=dtype)(x)
            x = conv(b.projection, x)
            return norm(b.projection_norm, x) if b.projection_norm else x
        if b.stride > 1:  # subsample (a 1x1 max-pool), or the TF seed's 2x2 average pool
            pool = layers.AveragePooling2D(b.stride) if b.shortcut == "avgpool_pad" else layers.MaxPooling2D(1, b.stride)
            x = pool(x)
        # option A, He et al. 2016 §4.2: the new channels are zeros, half before, half after
        pad = (b.out_channels - b.in_channels) // 2
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [pad, pad]]) if pad else x

    def gate(a: Attention | None, x):
        if a is None:
            return x
        if a.kind == "se":
            squeeze, expand = a.convs
            s = layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype)(x)
            s = layers.Activation("sigmoid", dtype=dtype)(conv(expand, relu(conv(squeeze, s))))
        else:  # ECA: a 1-D conv along the channels' means
            (c,) = a.convs
            s = layers.Reshape((a.channels, 1), dtype=dtype)(layers.GlobalAveragePooling2D(dtype=dtype)(x))
            s = layers.Conv1D(1, c.kernel, padding="same", use_bias=c.bias, name=c.path, dtype=dtype)(s)
            s = layers.Reshape((1, 1, a.channels), dtype=dtype)(layers.Activation("sigmoid", dtype=dtype)(s))
        return layers.Multiply(dtype=dtype)([x, s])

    def block(b: BlockPlan, x):
        if spec.preact:  # He et al. 2016b: BN-ReLU before every conv; a projection reads the pre-activated input
            preact = relu(norm(b.norms[0], x))
            identity = shortcut(b, preact if b.projection else x)
            out = conv(b.convs[0], preact)
            for c, n in zip(b.convs[1:], b.norms[1:]):
                out = conv(c, relu(norm(n, out)))
            return add(out, identity)
        identity = shortcut(b, x)
        out = x
        for i, (c, n) in enumerate(zip(b.convs, b.norms), start=1):
            out = norm(n, conv(c, out))
            if i < len(b.convs):
                out = relu(out)
        out = gate(b.attention, out)
        return relu(add(out, identity)) if spec.relu_after_add else add(relu(out), identity)

    x = inputs = keras.Input((None, None, spec.in_channels), dtype=keras.dtype_policies.get(dtype).compute_dtype)
    for i, c in enumerate(plan.stem.convs):
        if i:
            x = relu(norm(plan.stem.norms[i - 1], x))
        x = conv(c, x)
    if not spec.preact:
        x = relu(norm(plan.stem.norm, x))
    if plan.stem.maxpool:
        x = maxpool(x)
    for b in plan.blocks:
        x = block(b, x)
    if spec.preact:
        x = relu(norm(plan.post_norm, x))
    x = layers.GlobalAveragePooling2D(name="avgpool", dtype=dtype)(x)
    if plan.fc:
        x = layers.Dense(spec.num_classes, name="fc", dtype=dtype)(x)
    return keras.Model(inputs, x, name=spec.name)


def assign(model: keras.Model, spec: ResNetSpec, weights: Mapping[str, np.ndarray], *, consume: bool = False) -> None:
    """Set the variables of ``build``'s model from canonical weights, layer by canonical name. With ``consume``,
    ``weights`` is emptied as it goes."""
    for layer in canonical_layers(spec):
        target = model.get_layer(layer.path)
        for param in layer.shapes:
            attr, perm = PARAMS[layer.kind][param]
            key = f"{layer.path}.{param}"
            value = weights.pop(key) if consume else weights[key]
            variable = getattr(target, attr)
            variable.assign(from_canonical(np.asarray(value), perm).astype(variable.dtype))


def export(model: keras.Model, spec: ResNetSpec) -> dict[str, np.ndarray]:
    """The canonical weights of ``build``'s model, layer by canonical name."""
    out = {}
    for layer in canonical_layers(spec):
        target = model.get_layer(layer.path)
        for param in layer.shapes:
            attr, perm = PARAMS[layer.kind][param]
            out[f"{layer.path}.{param}"] = to_canonical(getattr(target, attr).numpy(), perm)
    return out
