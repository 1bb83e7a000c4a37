"""The ResNet family in Flax NNX, built from a ``shared.spec.ResNetSpec`` (NHWC)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shared.spec import MIXED_PRECISION, Attention, BlockPlan, Conv, Norm, ResNetSpec, get_spec

LAYOUT = "NHWC"


class Policy(NamedTuple):
    """The compute and parameter dtypes, as Keras's dtype policy: bfloat16 over float32 is mixed precision."""

    dtype: jnp.dtype = jnp.dtype(jnp.float32)
    param_dtype: jnp.dtype = jnp.dtype(jnp.float32)


# torchvision's initialisation, written once: the constructor draws it with JAX, reset_parameters on the host
def he_normal_std(kernel_shape: tuple[int, ...]) -> float:
    """A conv kernel's (HWIO) standard deviation: He normal over fan-out."""
    *window, _, cout = kernel_shape
    return math.sqrt(2 / (math.prod(window) * cout))


def linear_bound(fan_in: int) -> float:
    """The classifier's weight and bias are U(-b, b) with b = 1 / sqrt(fan_in), as nn.Linear's."""
    return 1 / math.sqrt(fan_in)


def conv(plan: Conv, *, rngs: nnx.Rngs, policy: Policy) -> nnx.Module:
    # pad like PyTorch (k//2 on every side), or like TensorFlow's 'same' for the TF seed and the Flax example
    k = plan.kernel
    padding = "SAME" if plan.padding == "tf_same" else [(k // 2, k // 2)] * plan.dims
    # feature_group_count > 1: a grouped conv (ResNeXt); kernel (k, k, in / groups, out)
    shape = (*(k,) * plan.dims, plan.in_channels // plan.groups, plan.out_channels)
    return nnx.Conv(
        plan.in_channels, plan.out_channels, shape[:-2], plan.stride, padding=padding, feature_group_count=plan.groups,
        use_bias=plan.bias, kernel_init=nnx.initializers.normal(he_normal_std(shape)), **policy._asdict(), rngs=rngs,
    )


class Identity(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm that normalises in the parameters' dtype and returns the compute dtype.

    Under mixed precision nnx.BatchNorm would cast its running statistics, scale and bias to bfloat16
    before using them; torch.autocast and Keras's mixed policy keep all of BN in float32 and round only
    its output, and so does this (tests/test_precision.py shows the difference failing the check).
    """

    def __init__(self, channels: int, *, policy: Policy, **kwargs):
        super().__init__(channels, dtype=policy.param_dtype, param_dtype=policy.param_dtype, **kwargs)
        self.compute_dtype = policy.dtype
        # nnx.BatchNorm keeps its statistics in float32 whatever param_dtype says; float64 needs them in param_dtype
        self.mean = nnx.BatchStat(jnp.zeros(channels, policy.param_dtype))
        self.var = nnx.BatchStat(jnp.ones(channels, policy.param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x).astype(self.compute_dtype)


def norm(spec: ResNetSpec, plan: Norm, *, rngs: nnx.Rngs, policy: Policy) -> nnx.Module:
    if not spec.batch_norm:
        return Identity()
    # Flax momentum is the weight of the old value: 1 - PyTorch's; the exact two-pass
    # variance (use_fast_variance=False) matches PyTorch and Keras in training
    return BatchNorm(
        plan.channels, policy=policy, momentum=1 - spec.bn_momentum, epsilon=spec.bn_eps, use_fast_variance=False, rngs=rngs,
    )


class Sequential(nnx.List):
    """Layers called in order, numbered like torch's nn.Sequential (nnx.Sequential would add a 'layers' level to the paths)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self:
            x = layer(x)
        return x


class ReLU(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(x)


def make_stem(spec: ResNetSpec, *, rngs: nnx.Rngs, policy: Policy) -> nnx.Module:
    """The stem's conv, or the deep stem's convs with BN and ReLU between them (timm's indices: conv 3i, BN 3i + 1)."""
    plan = spec.plan().stem
    stem = []
    for i, c in enumerate(plan.convs):
        if i:
            stem.append(norm(spec, plan.norms[i - 1], rngs=rngs, policy=policy))
            stem.append(ReLU())
        stem.append(conv(c, rngs=rngs, policy=policy))
    return stem[0] if spec.stem != "deep" else Sequential(stem)


class MaxPool(nnx.Module):
    """The stem's 3x3/2 max-pool, padded by one (TF-'same' where ``padding`` says): with -inf, or with zeros as
    Keras applications V2 does."""

    def __init__(self, spec: ResNetSpec):
        self.zero_pad = spec.pool_zero_pad
        self.tf_same = spec.padding == "tf_same"

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.tf_same:  # the Flax ImageNet example's own 'SAME' max-pool: more at the bottom/right, with -inf
            return nnx.max_pool(x, (3, 3), (2, 2), "SAME")
        if self.zero_pad:
            x = jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
            return nnx.max_pool(x, (3, 3), (2, 2), "VALID")
        return nnx.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))  # Flax pads a max-pool with -inf itself


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


class AvgPool(nnx.Module):
    """ResNet-D's 2x2 average pool before the projection: windows that overhang an odd edge average what they cover."""

    def __init__(self, stride: int):
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        # 'SAME' pads bottom/right; without count_include_pad=False (Flax's default is True) the pad would count
        s = self.stride
        return nnx.avg_pool(x, (2, 2), (s, s), "SAME", count_include_pad=False)


def avg_pool(stride: int) -> nnx.Module:
    return Identity() if stride == 1 else AvgPool(stride)  # as in timm, so the conv stays downsample.1


def make_shortcut(spec: ResNetSpec, plan: BlockPlan, *, rngs: nnx.Rngs, policy: Policy) -> nnx.Module:
    if plan.shortcut == "identity":
        return Identity()
    if plan.projection:
        # ResNet-D (He et al. 2019 §4.2): average-pool first, so the 1x1 conv reads every input, at stride 1
        projection = [avg_pool(plan.stride)] if plan.shortcut == "avgpool_projection" else []
        projection.append(conv(plan.projection, rngs=rngs, policy=policy))
        if plan.projection_norm:
            projection.append(norm(spec, plan.projection_norm, rngs=rngs, policy=policy))
        return Sequential(projection)
    return Shortcut(plan)


class SqueezeExcitation(nnx.Module):
    """Hu et al. 2018 as timm's SEModule: each channel's mean, squeezed and expanded by 1x1 convs, gates it."""

    def __init__(self, plan: Attention, *, rngs: nnx.Rngs, policy: Policy):
        squeeze, expand = plan.convs
        self.fc1 = conv(squeeze, rngs=rngs, policy=policy)
        self.fc2 = conv(expand, rngs=rngs, policy=policy)

    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = self.fc2(nnx.relu(self.fc1(s)))
        return x * nnx.sigmoid(s)


class EfficientChannelAttention(nnx.Module):
    """Wang et al. 2020 as timm's EcaModule: a 1-D conv along the channels' means gates each channel."""

    def __init__(self, plan: Attention, *, rngs: nnx.Rngs, policy: Policy):
        (c,) = plan.convs
        self.conv = conv(c, rngs=rngs, policy=policy)  # nnx.Conv takes a 1-D kernel as it takes a 2-D one

    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2))[..., None]  # (N, C, 1): the channels are the sequence the conv slides along
        s = self.conv(s)
        return x * nnx.sigmoid(s)[:, None, None, :, 0]


def make_attention(plan: Attention | None, *, rngs: nnx.Rngs, policy: Policy) -> nnx.Module:
    if plan is None:
        return Identity()
    gate = SqueezeExcitation if plan.kind == "se" else EfficientChannelAttention
    return gate(plan, rngs=rngs, policy=policy)


class Block(nnx.Module):
    """A residual block; basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) is data in ``plan.convs``."""

    def __init__(self, spec: ResNetSpec, plan: BlockPlan, *, rngs: nnx.Rngs, policy: Policy):
        self.preact, self.relu_after_add = spec.preact, spec.relu_after_add
        self.depth = len(plan.convs)
        for i, (c, n) in enumerate(zip(plan.convs, plan.norms), start=1):
            if self.preact:
                setattr(self, f"bn{i}", norm(spec, n, rngs=rngs, policy=policy))
            setattr(self, f"conv{i}", conv(c, rngs=rngs, policy=policy))
            if not self.preact:
                setattr(self, f"bn{i}", norm(spec, n, rngs=rngs, policy=policy))
        self.se = make_attention(plan.attention, rngs=rngs, policy=policy)
        self.downsample = make_shortcut(spec, plan, rngs=rngs, policy=policy)
        self.projects = plan.projection is not None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.preact:
            return self.call_preact(x)
        identity = self.downsample(x)
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = nnx.relu(out)
        out = self.se(out)
        if self.relu_after_add:
            return nnx.relu(out + identity)
        return nnx.relu(out) + identity  # the TF seed's block: ReLU inside the branch, then add

    def call_preact(self, x: jax.Array) -> jax.Array:
        # He et al. 2016b: BN-ReLU before every conv; a projection reads the pre-activated input
        preact = nnx.relu(self.bn1(x))
        identity = self.downsample(preact if self.projects else x)
        out = self.conv1(preact)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"conv{i}")(nnx.relu(getattr(self, f"bn{i}")(out)))
        return out + identity


class ResNet(nnx.Module):
    """The ResNet ``spec`` describes, NHWC; its attributes and NNX state paths are torchvision's module names.

    The constructor draws torchvision's initialisation with JAX, op by op; ``build_model`` builds the structure
    with ``nnx.eval_shape`` and draws the same on the host (``reset_parameters``), much faster.
    """

    def __init__(self, spec: ResNetSpec, *, rngs: nnx.Rngs, policy: Policy = Policy()):
        self.spec = spec
        self.policy = policy
        plan = spec.plan()
        self.conv1 = make_stem(spec, rngs=rngs, policy=policy)
        if not spec.preact:
            self.bn1 = norm(spec, plan.stem.norm, rngs=rngs, policy=policy)
        self.maxpool = MaxPool(spec) if spec.stem != "cifar" else Identity()
        for stage in range(1, spec.num_stages + 1):
            blocks = [Block(spec, block, rngs=rngs, policy=policy) for block in plan.blocks if block.stage == stage]
            setattr(self, f"layer{stage}", nnx.List(blocks))
        if spec.preact:
            self.post_bn = norm(spec, plan.post_norm, rngs=rngs, policy=policy)
        bound = linear_bound(spec.final_width)
        fc_init = nnx.initializers.uniform(2 * bound)
        shifted = lambda key, shape, dtype: fc_init(key, shape, dtype) - bound  # noqa: E731  U(-b, b)
        # num_classes=0: a headless backbone, whose output is the pooled features (timm's reset_classifier(0))
        self.fc = nnx.Linear(
            spec.final_width, spec.num_classes, kernel_init=shifted, bias_init=shifted,
            **policy._asdict(), rngs=rngs,
        ) if spec.num_classes else Identity()

    def reset_parameters(self, seed: int) -> None:
        """The constructor's initialisation (torchvision's), drawn on the host from ``seed``.

        Drawn with JAX op by op, as the constructor draws, each new kernel shape compiles its own XLA program:
        a first resnet50 takes 6.5 s that way and 1.0 s this way, on an ``nnx.eval_shape`` model
        (docs/speed.md, "Start-up").
        """
        rng = np.random.default_rng(seed)

        def put(variable: nnx.Variable, value: np.ndarray) -> None:
            # cast on the host (a cast on the device compiles per shape); a new array, as an nnx.eval_shape model has none
            variable.value = jax.device_put(np.asarray(value, variable.dtype))

        for _, module in nnx.iter_graph(self):
            if isinstance(module, nnx.Conv):
                shape = module.kernel.shape
                put(module.kernel, rng.standard_normal(shape, np.float32) * np.float64(he_normal_std(shape)))
                if module.bias is not None:
                    put(module.bias, np.zeros(module.bias.shape))
            elif isinstance(module, BatchNorm):
                for variable, value in ((module.scale, 1), (module.bias, 0), (module.mean, 0), (module.var, 1)):
                    put(variable, np.full(variable.shape, value))
        if isinstance(self.fc, nnx.Linear):
            bound = linear_bound(self.spec.final_width)
            for variable in (self.fc.kernel, self.fc.bias):
                put(variable, rng.uniform(-bound, bound, variable.shape))

    def forward_features(self, x: jax.Array) -> dict[str, jax.Array]:
        """The stem's output, every block's (by canonical name, 'layer3.2'), the pooled features and the logits
        ('fc'; a headless model's pooled features again, as timm's num_classes=0 returns them)."""
        feats = {}
        x = self.conv1(x)
        if not self.spec.preact:
            x = nnx.relu(self.bn1(x))
        feats["stem"] = x = self.maxpool(x)
        for stage in range(1, self.spec.num_stages + 1):
            for index, block in enumerate(getattr(self, f"layer{stage}")):
                feats[f"layer{stage}.{index}"] = x = block(x)
        if self.spec.preact:
            x = nnx.relu(self.post_bn(x))
        feats["avgpool"] = x = jnp.mean(x, axis=(1, 2), keepdims=True)
        feats["flatten"] = x = x.reshape(x.shape[0], -1)
        feats["fc"] = self.fc(x)
        return feats

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_features(x)["fc"]


def policy(dtype: str) -> Policy:
    """The Policy for a dtype name: bfloat16/float16 are mixed precision over float32 parameters.

    float64 needs 64-bit JAX, a process-wide switch this package leaves to its caller:
    build and run the model inside ``with jax.enable_x64(True):`` (or set ``jax_enable_x64``).
    """
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("a float64 Flax model needs 64-bit JAX: build and run it inside `with jax.enable_x64(True):`")
    return Policy(jnp.dtype(dtype), jnp.dtype("float32" if dtype in MIXED_PRECISION else dtype))


def empty_model(spec_or_name: ResNetSpec | str, dtype: str = "float32") -> ResNet:
    """The model's structure with placeholder variables, for values to fill (nnx.eval_shape: nothing drawn or compiled)."""
    return nnx.eval_shape(lambda: ResNet(get_spec(spec_or_name), rngs=nnx.Rngs(0), policy=policy(dtype)))


def build_model(spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
    """A ResNet for ``spec_or_name``, initialised from ``seed``; input NHWC, output logits; ``dtype`` as in ``policy``.

    The structure is ``empty_model``'s and the values ``reset_parameters``': the constructor's distributions,
    not its draws.
    """
    model = empty_model(spec_or_name, dtype)
    model.reset_parameters(seed)
    return model
