"""The ResNet family in PyTorch, built from a ``shared.spec.ResNetSpec`` (NCHW, torchvision names)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from shared.spec import MIXED_PRECISION, Attention, BlockPlan, Conv, Norm, ResNetSpec, get_spec

LAYOUT = "NCHW"


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad like TensorFlow's 'same': the total a 'valid' window needs, the odd one at the bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Conv2d(nn.Conv2d):
    """nn.Conv2d that can also pad like TensorFlow's 'same' (more at the bottom/right); PyTorch pads symmetrically."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool, padding: str, groups: int = 1):
        self.tf_same = padding == "tf_same"
        super().__init__(cin, cout, kernel, stride, padding=0 if self.tf_same else kernel // 2, bias=bias, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            x = tf_same_pad(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


def conv(plan: Conv) -> nn.Module:
    # groups > 1: a grouped conv (ResNeXt), one nn.Conv2d; its weight is (out, in / groups, k, k)
    return Conv2d(plan.in_channels, plan.out_channels, plan.kernel, plan.stride, plan.bias, plan.padding, plan.groups)


def norm(spec: ResNetSpec, plan: Norm) -> nn.Module:
    if not spec.batch_norm:
        return nn.Identity()
    return nn.BatchNorm2d(plan.channels, eps=spec.bn_eps, momentum=spec.bn_momentum)


def make_stem(spec: ResNetSpec) -> nn.Module:
    """The stem's conv, or the deep stem's convs with BN and ReLU between them (timm's indices: conv 3i, BN 3i + 1)."""
    plan = spec.plan().stem
    stem = []
    for i, c in enumerate(plan.convs):
        if i:
            stem.append(norm(spec, plan.norms[i - 1]))
            stem.append(nn.ReLU(inplace=True))
        stem.append(conv(c))
    return stem[0] if spec.stem != "deep" else nn.Sequential(*stem)


class MaxPool(nn.Module):
    """The stem's 3x3/2 max-pool, padded by one (TF-'same' where ``padding`` says): with -inf, or with zeros as
    Keras applications V2 does."""

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.zero_pad = spec.pool_zero_pad
        self.tf_same = spec.padding == "tf_same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:  # the Flax ImageNet example's 'SAME' max-pool: more at the bottom/right
            return F.max_pool2d(tf_same_pad(x, 3, 2, -math.inf), 3, 2)
        if self.zero_pad:
            x = F.pad(x, (1, 1, 1, 1))
            return F.max_pool2d(x, 3, 2)
        return F.max_pool2d(x, 3, 2, padding=1)  # PyTorch pads a max-pool with -inf itself


class Shortcut(nn.Module):
    """Parameter-free shortcut: subsample (or 2x2 average-pool), then zero-pad new channels."""

    def __init__(self, plan: BlockPlan):
        super().__init__()
        self.stride = plan.stride
        self.avgpool = plan.shortcut == "avgpool_pad"
        self.pad = (plan.out_channels - plan.in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            s = self.stride
            x = F.avg_pool2d(x, s) if self.avgpool else x[:, :, ::s, ::s]
        # option A, He et al. 2016 §4.2: the new channels are zeros, half before, half after
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x


def avg_pool(stride: int) -> nn.Module:
    """ResNet-D's 2x2 average pool before the projection: windows that overhang an odd edge average what they cover."""
    if stride == 1:
        return nn.Identity()  # as in timm, so the conv stays downsample.1
    return nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)


def make_shortcut(spec: ResNetSpec, plan: BlockPlan) -> nn.Module:
    if plan.shortcut == "identity":
        return nn.Identity()
    if plan.projection:
        # ResNet-D (He et al. 2019 §4.2): average-pool first, so the 1x1 conv reads every input, at stride 1
        projection = [avg_pool(plan.stride)] if plan.shortcut == "avgpool_projection" else []
        projection.append(conv(plan.projection))
        if plan.projection_norm:
            projection.append(norm(spec, plan.projection_norm))
        return nn.Sequential(*projection)
    return Shortcut(plan)


class SqueezeExcitation(nn.Module):
    """Hu et al. 2018 as timm's SEModule: each channel's mean, squeezed and expanded by 1x1 convs, gates it."""

    def __init__(self, plan: Attention):
        super().__init__()
        squeeze, expand = plan.convs
        self.fc1 = conv(squeeze)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = conv(expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.relu(self.fc1(s)))
        return x * torch.sigmoid(s)


class EfficientChannelAttention(nn.Module):
    """Wang et al. 2020 as timm's EcaModule: a 1-D conv along the channels' means gates each channel."""

    def __init__(self, plan: Attention):
        super().__init__()
        (c,) = plan.convs
        self.conv = nn.Conv1d(c.in_channels, c.out_channels, c.kernel, padding=c.kernel // 2, bias=c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C): the channels are the sequence the conv slides along
        s = self.conv(s)
        return x * torch.sigmoid(s).transpose(1, 2).unsqueeze(-1)


def make_attention(plan: Attention | None) -> nn.Module:
    if plan is None:
        return nn.Identity()
    return SqueezeExcitation(plan) if plan.kind == "se" else EfficientChannelAttention(plan)


class Block(nn.Module):
    """A residual block; basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) is data in ``plan.convs``."""

    def __init__(self, spec: ResNetSpec, plan: BlockPlan):
        super().__init__()
        self.preact, self.relu_after_add = spec.preact, spec.relu_after_add
        self.depth = len(plan.convs)
        for i, (c, n) in enumerate(zip(plan.convs, plan.norms), start=1):
            if self.preact:
                setattr(self, f"bn{i}", norm(spec, n))
            setattr(self, f"conv{i}", conv(c))
            if not self.preact:
                setattr(self, f"bn{i}", norm(spec, n))
        self.se = make_attention(plan.attention)
        # in place, as torchvision: after a conv, BN or the sum, a ReLU reads a tensor nothing else holds and
        # writes no second copy of the activations. Not in pre-activation blocks, whose first ReLU can read
        # the block's input itself (when BN is off)
        self.relu = nn.ReLU(inplace=not spec.preact)
        self.downsample = make_shortcut(spec, plan)
        self.projects = plan.projection is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            return self.forward_preact(x)
        identity = self.downsample(x)
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = self.relu(out)
        out = self.se(out)
        if self.relu_after_add:
            out += identity  # in place, as torchvision: the last BN's (or conv's) backward does not read its output
            return self.relu(out)
        return self.relu(out) + identity  # the TF seed's block: ReLU inside the branch, then add

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        # He et al. 2016b: BN-ReLU before every conv; a projection reads the pre-activated input
        preact = self.relu(self.bn1(x))
        identity = self.downsample(preact if self.projects else x)
        out = self.conv1(preact)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"conv{i}")(self.relu(getattr(self, f"bn{i}")(out)))
        return out + identity


class ResNet(nn.Module):
    """The ResNet ``spec`` describes, NCHW, with torchvision's module names and initialisation.

    ``compute_dtype`` (bfloat16 or float16) is mixed precision: float32 parameters, the forward under autocast.
    """

    def __init__(self, spec: ResNetSpec, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.spec = spec
        plan = spec.plan()
        # mixed precision: the parameters stay float32, the forward runs under torch.autocast in this dtype
        self.compute_dtype = compute_dtype
        self.conv1 = make_stem(spec)
        if not spec.preact:
            self.bn1 = norm(spec, plan.stem.norm)
        self.relu = nn.ReLU(inplace=not spec.preact)  # the stem's (fresh), or post_bn's (maybe the last block's output)
        self.maxpool = MaxPool(spec) if spec.stem != "cifar" else nn.Identity()
        for stage in range(1, spec.num_stages + 1):
            blocks = [Block(spec, block) for block in plan.blocks if block.stage == stage]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        if spec.preact:
            self.post_bn = norm(spec, plan.post_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # num_classes=0: a headless backbone, whose output is the pooled features (timm's reset_classifier(0))
        self.fc = nn.Linear(spec.final_width, spec.num_classes) if spec.num_classes else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if next(self.parameters()).is_meta:
            # a model for a checkpoint to fill (checkpoint.empty_model): nothing to draw, and the meta device's
            # normal_ would import its Python kernels on first use (1 s)
            return
        # torchvision's init, spelled out so the other frameworks can match it
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.fc, nn.Linear):
            bound = 1 / math.sqrt(self.spec.final_width)
            nn.init.uniform_(self.fc.weight, -bound, bound)
            nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stem's output, every block's (by canonical name, 'layer3.2'), the pooled features and the logits
        ('fc'; a headless model's pooled features again, as timm's num_classes=0 returns them)."""
        feats = {}
        mixed = torch.autocast(x.device.type, self.compute_dtype) if self.compute_dtype else contextlib.nullcontext()
        with mixed:
            x = self.conv1(x)
            if not self.spec.preact:
                x = self.relu(self.bn1(x))
            feats["stem"] = x = self.maxpool(x)
            for stage in range(1, self.spec.num_stages + 1):
                for index, block in enumerate(getattr(self, f"layer{stage}")):
                    feats[f"layer{stage}.{index}"] = x = block(x)
            if self.spec.preact:
                x = self.relu(self.post_bn(x))
            feats["avgpool"] = x = self.avgpool(x)
            feats["flatten"] = x = torch.flatten(x, 1)
            feats["fc"] = self.fc(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["fc"]


def build_model(spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
    """A ResNet for ``spec_or_name``, initialised from ``seed``; input NCHW, output logits.

    ``dtype`` "bfloat16" or "float16" is mixed precision: float32 parameters, the forward under torch.autocast.
    """
    spec = get_spec(spec_or_name)
    with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
        torch.manual_seed(seed)
        model = ResNet(spec, compute_dtype=getattr(torch, dtype) if dtype in MIXED_PRECISION else None)
    return model.to(torch.float64 if dtype == "float64" else torch.float32)
