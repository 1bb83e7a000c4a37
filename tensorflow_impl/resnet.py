"""The ResNet family in Keras 3 (TensorFlow backend), built from a ``shared.spec.ResNetSpec`` (NHWC)."""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import layers, ops

from shared.spec import MIXED_PRECISION, PROJECTIONS, BlockPlan, ResNetSpec, get_spec

LAYOUT = "NHWC"


@keras.saving.register_keras_serializable(package="resnet_parity")
class Conv2d(layers.Conv2D):
    """Conv2D that pads like PyTorch (k//2 on every side, by hand) or like TensorFlow's 'same' (more at the bottom/right)."""

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, *, pad: str = "symmetric", **kwargs):
        self.pad = pad
        # at stride 1 Keras's 'same' pads an odd kernel by k//2 on every side, as PyTorch does: one conv op,
        # not a pad op and a copy of the activations before it
        symmetric_same = pad == "symmetric" and strides in (1, (1, 1))
        self.explicit_pad = kernel_size // 2 if pad == "symmetric" and not symmetric_same else 0
        padding = "same" if pad == "tf_same" or symmetric_same else "valid"
        super().__init__(filters, kernel_size, strides, padding=padding, **kwargs)

    def call(self, x):
        if p := self.explicit_pad:
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        return super().call(x)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        p = 2 * self.explicit_pad
        return super().compute_output_shape((n, h + p if h else h, w + p if w else w, c))

    def get_config(self) -> dict:
        return {**super().get_config(), "pad": self.pad}


def conv(spec: ResNetSpec, cin: int, cout: int, kernel: int, stride: int, bias: bool, *, name: str, seed, dtype,
         stem: bool = False) -> layers.Layer:
    del cin  # Keras reads the input channels off the first batch
    # torchvision's init, spelled out: He normal over fan-out
    init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal", seed=seed)
    pad = spec.stem_padding if stem else spec.padding
    return Conv2d(cout, kernel, stride, pad=pad, use_bias=bias, kernel_initializer=init, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="resnet_parity")
class BatchNorm(layers.BatchNormalization):
    """BatchNormalization that normalises as PyTorch and Flax do: ``(x - mean) * (gamma / sqrt(var + eps)) + beta``.

    Keras's TensorFlow backend calls ``tf.nn.batch_normalization``, which computes ``x * inv + (beta - mean * inv)``:
    where a channel's mean is large against its spread the two terms cancel, and in training gamma's gradient
    becomes the difference of two large sums, several times further from the float64 truth than PyTorch's
    (``tests/test_training_parity.py``). Statistics, momentum and the float32 compute under mixed precision are
    Keras's own.
    """

    def call(self, inputs, training=None):
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))  # BN in float32 at least, as Keras
        if training and self.trainable:
            mean, variance = self._moments(x, None)
            self.moving_mean.assign(self.moving_mean * self.momentum + ops.cast(mean, self.moving_mean.dtype) * (1 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + ops.cast(variance, self.moving_variance.dtype) * (1 - self.momentum))
        else:
            mean, variance = ops.cast(self.moving_mean, x.dtype), ops.cast(self.moving_variance, x.dtype)
        inv = ops.rsqrt(variance + self.epsilon) * ops.cast(self.gamma, x.dtype)
        return ops.cast((x - mean) * inv + ops.cast(self.beta, x.dtype), self.compute_dtype)


def norm(spec: ResNetSpec, channels: int, *, name: str, dtype) -> layers.Layer:
    del channels  # read off the first batch, as for conv
    if not spec.batch_norm:
        return layers.Identity(name=name, dtype=dtype)
    # Keras momentum is the weight of the old value: 1 - PyTorch's
    return BatchNorm(momentum=1 - spec.bn_momentum, epsilon=spec.bn_eps, name=name, dtype=dtype)


class Sequential(layers.Layer):
    """Layers called in order, indexed like torch's nn.Sequential, so 'downsample.0' names the first
    (keras.Sequential is a Model, which takes no dtype policy of its own)."""

    def __init__(self, sequence: list[layers.Layer], **kwargs):
        super().__init__(**kwargs)
        self.sequence = sequence

    def __getitem__(self, index: int) -> layers.Layer:
        return self.sequence[index]

    def call(self, x, training=False):
        for layer in self.sequence:
            x = layer(x, training=training)
        return x


def make_stem(spec: ResNetSpec, *, seed, dtype) -> layers.Layer:
    """The stem's conv, or the deep stem's convs with BN and ReLU between them (timm's indices: conv 3i, BN 3i + 1)."""
    convs = spec.stem_convs()
    stem = []
    for i, (cin, cout, kernel, stride) in enumerate(convs):
        last = i == len(convs) - 1
        if i:
            stem.append(norm(spec, cin, name=f"conv1.{len(stem)}", dtype=dtype))
            stem.append(layers.ReLU(name=f"conv1.{len(stem)}", dtype=dtype))
        bias = spec.has_bias(not (last and spec.preact), stem=True)
        name = f"conv1.{len(stem)}" if spec.stem == "deep" else "conv1"
        stem.append(conv(spec, cin, cout, kernel, stride, bias, name=name, seed=seed, dtype=dtype, stem=True))
    return stem[0] if spec.stem != "deep" else Sequential(stem, name="conv1", dtype=dtype)


class MaxPool(layers.Layer):
    """The stem's 3x3/2 max-pool, padded by one (TF-'same' where ``padding`` says): with -inf, or with zeros as
    Keras applications V2 does."""

    def __init__(self, spec: ResNetSpec, **kwargs):
        super().__init__(**kwargs)
        self.tf_same = spec.padding == "tf_same"
        self.pad_value = 0.0 if spec.pool_zero_pad else -math.inf

    def call(self, x):
        if self.tf_same:  # the Flax ImageNet example's 'SAME' max-pool: more at the bottom/right, never the pad
            return ops.max_pool(x, 3, 2, "same")
        # Keras's 'same' max-pool pads the bottom/right only at stride 2: pad by hand, then 'valid'
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=self.pad_value)
        return ops.max_pool(x, 3, 2, "valid")


class Shortcut(layers.Layer):
    """Parameter-free shortcut: subsample (or 2x2 average-pool), then zero-pad new channels."""

    def __init__(self, plan: BlockPlan, **kwargs):
        super().__init__(**kwargs)
        self.stride = plan.stride
        self.avgpool = plan.shortcut == "avgpool_pad"
        self.pad = (plan.out_channels - plan.in_channels) // 2

    def call(self, x):
        if self.stride > 1:
            s = self.stride
            x = ops.average_pool(x, s, s, "valid") if self.avgpool else x[:, ::s, ::s, :]
        # option A, He et al. 2016 §4.2: the new channels are zeros, half before, half after
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [self.pad, self.pad]]) if self.pad else x


def avg_pool(stride: int, *, name: str, dtype) -> layers.Layer:
    """ResNet-D's 2x2 average pool before the projection: windows that overhang an odd edge average what they cover."""
    if stride == 1:
        return layers.Identity(name=name, dtype=dtype)  # as in timm, so the conv stays downsample.1
    # TensorFlow's 'same' pads bottom/right and leaves the padding out of the average: timm's ceil_mode pool
    return layers.AveragePooling2D(2, stride, "same", name=name, dtype=dtype)


def make_shortcut(spec: ResNetSpec, plan: BlockPlan, *, seed, dtype) -> layers.Layer:
    p = f"{plan.prefix}.downsample"
    if plan.shortcut == "identity":
        return layers.Identity(name=p, dtype=dtype)
    if plan.shortcut in PROJECTIONS:
        with_bn = spec.batch_norm and spec.shortcut_bn
        bias = spec.has_bias(with_bn)
        # ResNet-D (He et al. 2019 §4.2): average-pool first, so the 1x1 conv reads every input, at stride 1
        pooled = plan.shortcut == "avgpool_projection"
        projection = [avg_pool(plan.stride, name=f"{p}.0", dtype=dtype)] if pooled else []
        stride = 1 if pooled else plan.stride
        projection.append(conv(spec, plan.in_channels, plan.out_channels, 1, stride, bias, name=f"{p}.{len(projection)}",
                               seed=seed, dtype=dtype))
        if with_bn:
            projection.append(norm(spec, plan.out_channels, name=f"{p}.{len(projection)}", dtype=dtype))
        return Sequential(projection, name=p, dtype=dtype)
    return Shortcut(plan, name=p, dtype=dtype)


class Block(layers.Layer):
    """A residual block; basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) is data in ``plan.convs``."""

    def __init__(self, spec: ResNetSpec, plan: BlockPlan, *, seed, **kwargs):
        super().__init__(name=plan.prefix, **kwargs)
        self.preact, self.relu_after_add = spec.preact, spec.relu_after_add
        self.depth = len(plan.convs)
        dtype = self.dtype_policy
        for i, (cin, cout, kernel, stride) in enumerate(plan.convs, start=1):
            last = i == self.depth
            if self.preact:
                setattr(self, f"bn{i}", norm(spec, cin, name=f"{plan.prefix}.bn{i}", dtype=dtype))
            bias = spec.has_bias(not (last and self.preact))
            setattr(self, f"conv{i}", conv(spec, cin, cout, kernel, stride, bias, name=f"{plan.prefix}.conv{i}", seed=seed, dtype=dtype))
            if not self.preact:
                setattr(self, f"bn{i}", norm(spec, cout, name=f"{plan.prefix}.bn{i}", dtype=dtype))
        self.downsample = make_shortcut(spec, plan, seed=seed, dtype=dtype)
        self.projects = plan.shortcut in PROJECTIONS

    # `training` reaches the BatchNormalization layers; Keras drops it for layers whose call takes none
    def call(self, x, training=False):
        if self.preact:
            return self.call_preact(x, training)
        identity = self.downsample(x, training=training)
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out), training=training)
            if i < self.depth:
                out = ops.relu(out)
        if self.relu_after_add:
            return ops.relu(out + identity)
        return ops.relu(out) + identity  # the TF seed's block: ReLU inside the branch, then add

    def call_preact(self, x, training):
        # He et al. 2016b: BN-ReLU before every conv; a projection reads the pre-activated input
        preact = ops.relu(self.bn1(x, training=training))
        identity = self.downsample(preact if self.projects else x, training=training)
        out = self.conv1(preact)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"conv{i}")(ops.relu(getattr(self, f"bn{i}")(out, training=training)))
        return out + identity


@keras.saving.register_keras_serializable(package="resnet_parity")
class ResNet(keras.Model):
    """The ResNet ``spec`` describes, NHWC; layers are named by torchvision's module paths ('layer1.0.conv1').

    ``seed`` seeds the initialisers (torchvision's) through a local generator; the dtype policy comes in ``kwargs``.
    """

    def __init__(self, spec: ResNetSpec, *, seed: int | None = None, **kwargs):
        super().__init__(name=kwargs.pop("name", spec.name), **kwargs)
        self.spec = spec
        dtype = self.dtype_policy
        # a local generator for the initialisers: Keras's global seed is left alone
        seed = keras.random.SeedGenerator(seed)
        self.conv1 = make_stem(spec, seed=seed, dtype=dtype)
        if not spec.preact:
            self.bn1 = norm(spec, spec.stem_width, name="bn1", dtype=dtype)
        self.maxpool = MaxPool(spec, name="maxpool", dtype=dtype) if spec.stem != "cifar" else layers.Identity(name="maxpool", dtype=dtype)
        for stage in range(1, spec.num_stages + 1):
            blocks = [Block(spec, plan, seed=seed, dtype=dtype) for plan in spec.blocks() if plan.stage == stage]
            setattr(self, f"layer{stage}", blocks)
        if spec.preact:
            self.post_bn = norm(spec, spec.final_width, name="post_bn", dtype=dtype)
        bound = 1 / math.sqrt(spec.final_width)
        fc_init = keras.initializers.RandomUniform(-bound, bound, seed=seed)
        self.fc = layers.Dense(spec.num_classes, kernel_initializer=fc_init, bias_initializer=fc_init, name="fc", dtype=dtype)

    def forward_features(self, x, training=False) -> dict:
        """The stem's output, every block's (by canonical name, 'layer3.2'), the pooled features and the logits."""
        feats = {}
        x = self.conv1(x)
        if not self.spec.preact:
            x = ops.relu(self.bn1(x, training=training))
        feats["stem"] = x = self.maxpool(x)
        for stage in range(1, self.spec.num_stages + 1):
            for index, block in enumerate(getattr(self, f"layer{stage}")):
                feats[f"layer{stage}.{index}"] = x = block(x, training=training)
        if self.spec.preact:
            x = ops.relu(self.post_bn(x, training=training))
        feats["avgpool"] = x = ops.mean(x, axis=(1, 2), keepdims=True)
        feats["flatten"] = x = ops.reshape(x, (ops.shape(x)[0], -1))
        feats["fc"] = self.fc(x)
        return feats

    def call(self, x, training=False):
        return self.forward_features(x, training)["fc"]

    def get_config(self) -> dict:
        return {"spec": dataclasses.asdict(self.spec), "name": self.name, "dtype": self.dtype_policy.name}

    @classmethod
    def from_config(cls, config: dict) -> ResNet:
        spec = config.pop("spec")
        spec = ResNetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        model = cls(spec, **config)
        model.build_all()
        return model

    def build_all(self) -> None:
        """Create every variable by running one small batch (Keras builds lazily; global pooling takes any size)."""
        self(ops.zeros((1, 32, 32, self.spec.in_channels), dtype=self.dtype_policy.compute_dtype))


def policy(dtype: str) -> str:
    """The Keras dtype policy for a dtype name: bfloat16/float16 are mixed precision over float32 variables."""
    return f"mixed_{dtype}" if dtype in MIXED_PRECISION else dtype


def build_model(spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
    """A built ResNet for ``spec_or_name``, initialised from ``seed``; input NHWC, output logits.

    ``dtype`` "bfloat16" or "float16" is mixed precision: Keras's mixed_bfloat16/mixed_float16 policy.
    """
    model = ResNet(get_spec(spec_or_name), seed=seed, dtype=policy(dtype))
    model.build_all()
    return model
