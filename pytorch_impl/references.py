"""PyTorch's reference models for ``resnet-parity bench`` (optional: bench times ours alone without this module):
torchvision's ResNets, ResNeXts and Wide ResNets, and for the CIFAR presets the ResNet of
akamaster/pytorch_resnet_cifar10 (the usual PyTorch ResNet-20: torchvision's style, a 3x3 stem, option-A shortcuts
through a lambda that subsamples and zero-pads channels). Both run through ``pytorch_impl.bench.step``, as ours does.

The registry's torchvision wheels are CUDA builds, whose C++ ops fail to load on the CPU torch; torchvision then
skips its ops, but its ``_meta_registrations.py`` still registers fakes for ``torchvision::nms`` (and ``qnms``),
which raises ``RuntimeError: operator torchvision::nms does not exist``. ``install_torchvision_shim`` defines those
two schemas first, so the pure-Python parts (the models, transforms, timm's layers, transformers' image
processors) import; detection ops stay unusable, which no ResNet needs. The tests use it too.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.contract import Step
from shared.recipe import Recipe
from shared.spec import ResNetSpec

from .bench import step

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
               "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
CIFAR = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")

_LIBRARY = None  # keep a reference: a collected torch.library.Library removes its definitions


def install_torchvision_shim() -> bool:
    """Define ``torchvision::nms``/``qnms`` if torchvision's C++ ops cannot load; True if defined now.

    Call before the first ``import torchvision`` (directly or through timm/transformers).
    Idempotent, and a no-op where the real ops already exist (a matching torchvision build).
    """
    global _LIBRARY
    if _LIBRARY is not None or "torchvision" in sys.modules:
        return False
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return False  # the real ops are registered (matching torch/torchvision builds)
    except RuntimeError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = lib
    return True


def _torchvision_models():
    install_torchvision_shim()
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


def reference_step(build: Callable[[], nn.Module], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe, *, compile: bool) -> Step:
    return step(build(), mode, x, y, recipe, compile)
