"""PyTorch's reference models for ``resnet-parity bench``: torchvision's ResNets, and for the CIFAR presets
the ResNet of akamaster/pytorch_resnet_cifar10 (the usual PyTorch ResNet-20: torchvision's style, a 3x3
stem, option-A shortcuts through a lambda that subsamples and zero-pads channels).

torchvision's wheel here is a CUDA build; the test shim (tests/torchvision_shim.py) lets it import on the
CPU torch, as the tests do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch.nn.functional as F
from torch import nn

from shared.spec import ResNetSpec

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CIFAR = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")


def _torchvision_models():
    shim = Path(__file__).resolve().parents[1] / "tests" / "torchvision_shim.py"
    if shim.is_file():
        spec = importlib.util.spec_from_file_location("torchvision_shim", shim)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.install_torchvision_shim()
    import torchvision.models

    return torchvision.models


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = planes // 4
            # option A: subsample, then zero channels on both sides
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, num_blocks, num_classes=10, in_channels=3):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def references(spec: ResNetSpec, size: int) -> tuple[list[tuple[str, Callable[[], nn.Module]]], list[str]]:
    """([(label, build)], [why missing]) for ``spec``."""
    if spec.name in TORCHVISION:
        try:
            models = _torchvision_models()
        except Exception as exc:  # noqa: BLE001  a broken torchvision install is a missing reference, not a failure
            return [], [f"torchvision does not import here ({type(exc).__name__}: {exc})".splitlines()[0]]
        return [(f"torchvision {spec.name}", lambda: getattr(models, spec.name)(num_classes=spec.num_classes))], []
    if spec.name in CIFAR:
        n = spec.layers
        return [(f"akamaster CIFAR {spec.name}", lambda: CifarResNet(n, spec.num_classes, spec.in_channels))], []
    return [], [f"no reference model for {spec.name}"]
