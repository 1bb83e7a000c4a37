"""The ResNet family in Flax NNX, built from a ``shared.spec.ResNetSpec`` (NHWC)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from shared.spec import BlockPlan, ResNetSpec, get_spec

# torchvision's init, spelled out: He normal over fan-out for convs
CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(spec: ResNetSpec, cin: int, cout: int, k: int, stride: int, bias: bool, rngs: nnx.Rngs, dtype) -> nnx.Conv:
    # pad like PyTorch (k//2 on every side), or like TensorFlow's 'same' for the TF seed
    padding = "SAME" if spec.padding == "tf_same" else [(k // 2, k // 2)] * 2
    return nnx.Conv(
        cin, cout, (k, k), stride, padding=padding, use_bias=bias, kernel_init=CONV_INIT,
        dtype=dtype, param_dtype=dtype, rngs=rngs,
    )


class Identity(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def norm(spec: ResNetSpec, channels: int, rngs: nnx.Rngs, dtype) -> nnx.Module:
    if not spec.batch_norm:
        return Identity()
    # Flax momentum is the weight of the old value: 1 - PyTorch's; the exact two-pass
    # variance (use_fast_variance=False) matches PyTorch and Keras in training
    bn = nnx.BatchNorm(
        channels, momentum=1 - spec.bn_momentum, epsilon=spec.bn_eps, use_fast_variance=False,
        dtype=dtype, param_dtype=dtype, rngs=rngs,
    )
    # nnx.BatchNorm keeps its statistics in float32 whatever param_dtype says; float64 needs them in dtype
    bn.mean, bn.var = nnx.BatchStat(jnp.zeros(channels, dtype)), nnx.BatchStat(jnp.ones(channels, dtype))
    return bn


class Shortcut(nnx.Module):
    """Parameter-free shortcut: subsample (or 2x2 average-pool), then zero-pad new channels."""

    def __init__(self, plan: BlockPlan):
        self.stride = plan.stride
        self.avgpool = plan.shortcut == "avgpool_pad"
        self.pad = (plan.out_channels - plan.in_channels) // 2

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stride > 1:
            s = self.stride
            x = nnx.avg_pool(x, (s, s), (s, s), "VALID") if self.avgpool else x[:, ::s, ::s, :]
        # option A, He et al. 2016 §4.2: the new channels are zeros, half before, half after
        return jnp.pad(x, [(0, 0), (0, 0), (0, 0), (self.pad, self.pad)]) if self.pad else x


def make_shortcut(spec: ResNetSpec, plan: BlockPlan, rngs: nnx.Rngs, dtype) -> nnx.Module | None:
    if plan.shortcut == "identity":
        return None
    if plan.shortcut == "projection":
        with_bn = spec.batch_norm and spec.shortcut_bn
        projection = [conv(spec, plan.in_channels, plan.out_channels, 1, plan.stride, spec.has_bias(with_bn), rngs, dtype)]
        return nnx.List(projection + [norm(spec, plan.out_channels, rngs, dtype)] if with_bn else projection)
    return Shortcut(plan)


class Block(nnx.Module):
    """A residual block; basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) is data in ``plan.convs``."""

    def __init__(self, spec: ResNetSpec, plan: BlockPlan, *, rngs: nnx.Rngs, dtype):
        self.preact, self.relu_after_add = spec.preact, spec.relu_after_add
        self.depth = len(plan.convs)
        for i, (cin, cout, k, stride) in enumerate(plan.convs, start=1):
            last = i == self.depth
            if self.preact:
                setattr(self, f"bn{i}", norm(spec, cin, rngs, dtype))
            setattr(self, f"conv{i}", conv(spec, cin, cout, k, stride, spec.has_bias(not (last and self.preact)), rngs, dtype))
            if not self.preact:
                setattr(self, f"bn{i}", norm(spec, cout, rngs, dtype))
        self.downsample = make_shortcut(spec, plan, rngs, dtype)

    def shortcut(self, x: jax.Array) -> jax.Array:
        if self.downsample is None:
            return x
        if isinstance(self.downsample, nnx.List):
            for layer in self.downsample:
                x = layer(x)
            return x
        return self.downsample(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.preact:
            return self.call_preact(x)
        identity = self.shortcut(x)
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = nnx.relu(out)
        if self.relu_after_add:
            return nnx.relu(out + identity)
        return nnx.relu(out) + identity  # the TF seed's block: ReLU inside the branch, then add

    def call_preact(self, x: jax.Array) -> jax.Array:
        # He et al. 2016b: BN-ReLU before every conv; a projection reads the pre-activated input
        preact = nnx.relu(self.bn1(x))
        identity = self.shortcut(preact if isinstance(self.downsample, nnx.List) else x)
        out = self.conv1(preact)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"conv{i}")(nnx.relu(getattr(self, f"bn{i}")(out)))
        return out + identity


class ResNet(nnx.Module):
    def __init__(self, spec: ResNetSpec, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.spec = spec
        stem_bn = spec.batch_norm and not spec.preact
        k, stride = (7, 2) if spec.stem == "imagenet" else (3, 1)
        self.conv1 = conv(spec, spec.in_channels, spec.stem_width, k, stride, spec.has_bias(stem_bn), rngs, dtype)
        self.bn1 = norm(spec, spec.stem_width, rngs, dtype) if stem_bn else Identity()
        for stage in range(1, spec.num_stages + 1):
            blocks = [Block(spec, plan, rngs=rngs, dtype=dtype) for plan in spec.blocks() if plan.prefix.startswith(f"layer{stage}.")]
            setattr(self, f"layer{stage}", nnx.List(blocks))
        if spec.preact:
            self.post_bn = norm(spec, spec.final_width, rngs, dtype)
        bound = 1 / math.sqrt(spec.final_width)
        fc_init = nnx.initializers.uniform(2 * bound)
        shifted = lambda key, shape, dtype=dtype: fc_init(key, shape, dtype) - bound  # noqa: E731  U(-b, b)
        self.fc = nnx.Linear(
            spec.final_width, spec.num_classes, kernel_init=shifted, bias_init=shifted,
            dtype=dtype, param_dtype=dtype, rngs=rngs,
        )

    def maxpool(self, x: jax.Array) -> jax.Array:
        if self.spec.stem != "imagenet":
            return x
        pad_value = 0.0 if self.spec.pool_zero_pad else -jnp.inf
        x = jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=pad_value)
        return nnx.max_pool(x, (3, 3), (2, 2), "VALID")

    def forward_features(self, x: jax.Array) -> dict[str, jax.Array]:
        """Output of each top-level stage, in order: stem, layer1.., avgpool, flatten, fc."""
        feats = {}
        x = self.conv1(x)
        if not self.spec.preact:
            x = nnx.relu(self.bn1(x))
        feats["stem"] = x = self.maxpool(x)
        for stage in range(1, self.spec.num_stages + 1):
            for block in getattr(self, f"layer{stage}"):
                x = block(x)
            feats[f"layer{stage}"] = x
        if self.spec.preact:
            x = nnx.relu(self.post_bn(x))
        feats["avgpool"] = x = jnp.mean(x, axis=(1, 2), keepdims=True)
        feats["flatten"] = x = x.reshape(x.shape[0], -1)
        feats["fc"] = self.fc(x)
        return feats

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_features(x)["fc"]


def build_model(spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
    """A ResNet for ``spec_or_name``, initialised from ``seed``; input NHWC, output logits."""
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # JAX drops to float32 silently without it
    return ResNet(get_spec(spec_or_name), rngs=nnx.Rngs(seed), dtype=jnp.dtype(dtype))
