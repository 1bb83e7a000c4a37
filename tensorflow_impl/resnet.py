"""The ResNet family in Keras 3 (TensorFlow backend), built from a ``shared.spec.ResNetSpec`` (NHWC)."""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import layers, ops

from shared.spec import MIXED_PRECISION, Attention, BlockPlan, Conv, Norm, ResNetSpec, get_spec

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

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        # a grouped conv as one conv per group, concatenated: TensorFlow's CPU kernels have no grouped gradient in
        # float64 (nor in float32 without oneDNN), and Keras compiles a grouped conv with XLA, whose CPU gradient is
        # hundreds of times slower (docs/grouped_conv.md)
        conv = super().convolution_op
        pairs = zip(ops.split(inputs, self.groups, axis=-1), ops.split(kernel, self.groups, axis=-1))
        return ops.concatenate([conv(x, k) for x, k in pairs], axis=-1)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        p = 2 * self.explicit_pad
        return super().compute_output_shape((n, h + p if h else h, w + p if w else w, c))

    def get_config(self) -> dict:
        return {**super().get_config(), "pad": self.pad}


def he_normal(seed) -> keras.initializers.Initializer:
    # torchvision's init, spelled out: He normal over fan-out
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal", seed=seed)


def conv(plan: Conv, *, seed, dtype) -> layers.Layer:
    # Keras reads the input channels off the first batch; groups > 1: a grouped conv (ResNeXt), kernel (k, k, in / groups, out)
    return Conv2d(plan.out_channels, plan.kernel, plan.stride, pad=plan.padding, groups=plan.groups, use_bias=plan.bias,
                  kernel_initializer=he_normal(seed), name=plan.path, dtype=dtype)


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


def norm(spec: ResNetSpec, plan: Norm, *, dtype) -> layers.Layer:
    # the channels are read off the first batch, as for conv
    if not spec.batch_norm:
        return layers.Identity(name=plan.path, dtype=dtype)
    # Keras momentum is the weight of the old value: 1 - PyTorch's
    return BatchNorm(momentum=1 - spec.bn_momentum, epsilon=spec.bn_eps, name=plan.path, dtype=dtype)


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
    plan = spec.plan().stem
    stem = []
    for i, c in enumerate(plan.convs):
        if i:
            stem.append(norm(spec, plan.norms[i - 1], dtype=dtype))
            stem.append(layers.ReLU(name=f"conv1.{len(stem)}", dtype=dtype))
        stem.append(conv(c, seed=seed, dtype=dtype))
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
    if plan.projection:
        # ResNet-D (He et al. 2019 §4.2): average-pool first, so the 1x1 conv reads every input, at stride 1
        projection = [avg_pool(plan.stride, name=f"{p}.0", dtype=dtype)] if plan.shortcut == "avgpool_projection" else []
        projection.append(conv(plan.projection, seed=seed, dtype=dtype))
        if plan.projection_norm:
            projection.append(norm(spec, plan.projection_norm, dtype=dtype))
        return Sequential(projection, name=p, dtype=dtype)
    return Shortcut(plan, name=p, dtype=dtype)


class SqueezeExcitation(layers.Layer):
    """Hu et al. 2018 as timm's SEModule: each channel's mean, squeezed and expanded by 1x1 convs, gates it."""

    def __init__(self, plan: Attention, *, seed, **kwargs):
        super().__init__(name=plan.path, **kwargs)
        squeeze, expand = plan.convs
        self.fc1 = conv(squeeze, seed=seed, dtype=self.dtype_policy)
        self.fc2 = conv(expand, seed=seed, dtype=self.dtype_policy)

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        s = self.fc2(ops.relu(self.fc1(s)))
        return x * ops.sigmoid(s)


class EfficientChannelAttention(layers.Layer):
    """Wang et al. 2020 as timm's EcaModule: a 1-D conv along the channels' means gates each channel."""

    def __init__(self, plan: Attention, *, seed, **kwargs):
        super().__init__(name=plan.path, **kwargs)
        (c,) = plan.convs
        # 'same' at stride 1 pads an odd kernel by k//2 at each end, as PyTorch's padding=k//2
        self.conv = layers.Conv1D(c.out_channels, c.kernel, padding="same", use_bias=c.bias,
                                  kernel_initializer=he_normal(seed), name=c.path, dtype=self.dtype_policy)

    def call(self, x):
        s = ops.expand_dims(ops.mean(x, axis=(1, 2)), -1)  # (N, C, 1): the channels are the sequence the conv slides along
        s = self.conv(s)
        return x * ops.sigmoid(s)[:, None, None, :, 0]


def make_attention(plan: Attention | None, *, name: str, seed, dtype) -> layers.Layer:
    if plan is None:
        return layers.Identity(name=name, dtype=dtype)
    gate = SqueezeExcitation if plan.kind == "se" else EfficientChannelAttention
    return gate(plan, seed=seed, dtype=dtype)


class Block(layers.Layer):
    """A residual block; basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) is data in ``plan.convs``."""

    def __init__(self, spec: ResNetSpec, plan: BlockPlan, *, seed, **kwargs):
        super().__init__(name=plan.prefix, **kwargs)
        self.preact, self.relu_after_add = spec.preact, spec.relu_after_add
        self.depth = len(plan.convs)
        dtype = self.dtype_policy
        for i, (c, n) in enumerate(zip(plan.convs, plan.norms), start=1):
            if self.preact:
                setattr(self, f"bn{i}", norm(spec, n, dtype=dtype))
            setattr(self, f"conv{i}", conv(c, seed=seed, dtype=dtype))
            if not self.preact:
                setattr(self, f"bn{i}", norm(spec, n, dtype=dtype))
        self.se = make_attention(plan.attention, name=f"{plan.prefix}.se", seed=seed, dtype=dtype)
        self.downsample = make_shortcut(spec, plan, seed=seed, dtype=dtype)
        self.projects = plan.projection is not None

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
        out = self.se(out)
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
        plan = spec.plan()
        dtype = self.dtype_policy
        # a local generator for the initialisers: Keras's global seed is left alone
        seed = keras.random.SeedGenerator(seed)
        self.conv1 = make_stem(spec, seed=seed, dtype=dtype)
        if not spec.preact:
            self.bn1 = norm(spec, plan.stem.norm, dtype=dtype)
        self.maxpool = MaxPool(spec, name="maxpool", dtype=dtype) if spec.stem != "cifar" else layers.Identity(name="maxpool", dtype=dtype)
        for stage in range(1, spec.num_stages + 1):
            blocks = [Block(spec, block, seed=seed, dtype=dtype) for block in plan.blocks if block.stage == stage]
            setattr(self, f"layer{stage}", blocks)
        if spec.preact:
            self.post_bn = norm(spec, plan.post_norm, dtype=dtype)
        bound = 1 / math.sqrt(spec.final_width)
        fc_init = keras.initializers.RandomUniform(-bound, bound, seed=seed)
        # num_classes=0: a headless backbone, whose output is the pooled features (timm's reset_classifier(0))
        self.fc = layers.Dense(spec.num_classes, kernel_initializer=fc_init, bias_initializer=fc_init, name="fc", dtype=dtype) \
            if spec.num_classes else layers.Identity(name="fc", dtype=dtype)

    def forward_features(self, x, training=False) -> dict:
        """The stem's output, every block's (by canonical name, 'layer3.2'), the pooled features and the logits
        ('fc'; a headless model's pooled features again, as timm's num_classes=0 returns them)."""
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
