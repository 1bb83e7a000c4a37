"""The ResNet family in PyTorch, built from a ``shared.spec.ResNetSpec`` (NCHW, torchvision names)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shared.spec import BlockPlan, ResNetSpec, get_spec


class Conv2d(nn.Conv2d):
    """nn.Conv2d that can also pad like TensorFlow's 'same' (more at the bottom/right)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, bias: bool, padding: str):
        self.tf_same = padding == "tf_same"
        super().__init__(cin, cout, kernel_size, stride, padding=0 if self.tf_same else kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def norm(spec: ResNetSpec, channels: int) -> nn.Module:
    if not spec.batch_norm:
        return nn.Identity()
    return nn.BatchNorm2d(channels, eps=spec.bn_eps, momentum=spec.bn_momentum)


class Shortcut(nn.Module):
    """Parameter-free shortcut: subsample (or 2x2 average-pool), then zero-pad new channels."""

    def __init__(self, plan: BlockPlan):
        super().__init__()
        self.stride = plan.stride
        self.avgpool = plan.shortcut == "avgpool_pad"
        self.pad = (plan.out_channels - plan.in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride) if self.avgpool else x[:, :, :: self.stride, :: self.stride]
        # option A, He et al. 2016 §4.2: the new channels are zeros, half before, half after
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x


def make_shortcut(spec: ResNetSpec, plan: BlockPlan) -> nn.Module | None:
    if plan.shortcut == "identity":
        return None
    if plan.shortcut == "projection":
        with_bn = spec.batch_norm and spec.shortcut_bn
        conv = Conv2d(plan.in_channels, plan.out_channels, 1, plan.stride, spec.has_bias(with_bn), spec.padding)
        return nn.Sequential(conv, norm(spec, plan.out_channels)) if with_bn else nn.Sequential(conv)
    return Shortcut(plan)


class Block(nn.Module):
    """A residual block; basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) is data in ``plan.convs``."""

    def __init__(self, spec: ResNetSpec, plan: BlockPlan):
        super().__init__()
        self.preact, self.relu_after_add = spec.preact, spec.relu_after_add
        self.depth = len(plan.convs)
        for i, (cin, cout, k, stride) in enumerate(plan.convs, start=1):
            last = i == self.depth
            if self.preact:
                setattr(self, f"bn{i}", norm(spec, cin))
            setattr(self, f"conv{i}", Conv2d(cin, cout, k, stride, spec.has_bias(not (last and self.preact)), spec.padding))
            if not self.preact:
                setattr(self, f"bn{i}", norm(spec, cout))
        self.relu = nn.ReLU()
        self.downsample = make_shortcut(spec, plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            return self.forward_preact(x)
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = self.relu(out)
        if self.relu_after_add:
            return self.relu(out + identity)
        return self.relu(out) + identity  # the TF seed's block: ReLU inside the branch, then add

    def forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        # He et al. 2016b: BN-ReLU before every conv; a projection reads the pre-activated input
        preact = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(preact if self.projects else x)
        out = self.conv1(preact)
        for i in range(2, self.depth + 1):
            out = getattr(self, f"conv{i}")(self.relu(getattr(self, f"bn{i}")(out)))
        return out + identity

    @property
    def projects(self) -> bool:
        return isinstance(self.downsample, nn.Sequential)


class ResNet(nn.Module):
    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        stem_bn = spec.batch_norm and not spec.preact
        k, stride = (7, 2) if spec.stem == "imagenet" else (3, 1)
        self.conv1 = Conv2d(spec.in_channels, spec.stem_width, k, stride, spec.has_bias(stem_bn), spec.padding)
        self.bn1 = norm(spec, spec.stem_width) if stem_bn else nn.Identity()
        self.relu = nn.ReLU()
        if spec.stem != "imagenet":
            self.maxpool = nn.Identity()
        elif spec.pool_zero_pad:
            self.maxpool = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, 2))
        else:
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)  # pads with -inf
        for stage in range(1, spec.num_stages + 1):
            blocks = [Block(spec, plan) for plan in spec.blocks() if plan.prefix.startswith(f"layer{stage}.")]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        if spec.preact:
            self.post_bn = norm(spec, spec.final_width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(spec.final_width, spec.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torchvision's init, spelled out so the other frameworks can match it
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        bound = 1 / math.sqrt(self.spec.final_width)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Output of each top-level stage, in order: stem, layer1.., avgpool, flatten, fc."""
        feats = {}
        x = self.relu(self.bn1(self.conv1(x))) if not self.spec.preact else self.conv1(x)
        feats["stem"] = x = self.maxpool(x)
        for stage in range(1, self.spec.num_stages + 1):
            feats[f"layer{stage}"] = x = getattr(self, f"layer{stage}")(x)
        if self.spec.preact:
            x = self.relu(self.post_bn(x))
        feats["avgpool"] = x = self.avgpool(x)
        feats["flatten"] = x = torch.flatten(x, 1)
        feats["fc"] = self.fc(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["fc"]


def build_model(spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
    """A ResNet for ``spec_or_name``, initialised from ``seed``; input NCHW, output logits."""
    spec = get_spec(spec_or_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet(spec)
    return model.to(getattr(torch, dtype))
