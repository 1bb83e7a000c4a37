"""Seed 001's two PyTorch networks (``../shared/seeds/``, file 001), reproduced for the tests: its Resnet50 and its
CIFAR-10 ResNet share one Block and one stem; the seed writes them out twice, here the stage table is the argument.
"""

from __future__ import annotations

import torch
from torch import nn

from helpers import randomize_torch


class SeedBlock(nn.Module):
    """Seed 001's Block, as written there: each conv a Sequential with its BN (and ReLU), the stride on the first
    1x1, and a shortcut only where the stage asks for one."""

    def __init__(self, in_channels, filters, stride=1, is_1x1conv=False):
        super().__init__()
        filter1, filter2, filter3 = filters
        self.is_1x1conv = is_1x1conv
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, filter1, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(filter1), nn.ReLU(),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(filter1, filter2, kernel_size=3, stride=1, padding=1, bias=False), nn.BatchNorm2d(filter2), nn.ReLU(),
        )
        self.conv3 = nn.Sequential(nn.Conv2d(filter2, filter3, kernel_size=1, stride=1, bias=False), nn.BatchNorm2d(filter3))
        if is_1x1conv:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, filter3, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(filter3),
            )

    def forward(self, x):
        x_shortcut = x
        x = self.conv3(self.conv2(self.conv1(x)))
        if self.is_1x1conv:
            x_shortcut = self.shortcut(x_shortcut)
        return self.relu(x + x_shortcut)


class SeedResNet(nn.Module):
    """Seed 001's Resnet50 (Layers = [3, 4, 6, 3], 1000 classes) and its CIFAR-10 ResNet (Layers = [3, 4], 10
    classes, the same 7x7 stem at 32x32): the seed writes them out twice; here the stage table is the argument."""

    def __init__(self, layers, num_classes):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for i, blocks in enumerate(layers):
            filters = (64 * 2**i, 64 * 2**i, 256 * 2**i)
            stage = [SeedBlock(in_channels, filters, stride=1 if i == 0 else 2, is_1x1conv=True)]
            stage += [SeedBlock(filters[2], filters) for _ in range(1, blocks)]
            setattr(self, f"conv{i + 2}", nn.Sequential(*stage))
            in_channels = filters[2]
        self.stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Sequential(nn.Linear(in_channels, num_classes))

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        for i in range(self.stages):
            x = getattr(self, f"conv{i + 2}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


SEED_TORCH = {"seed_torch_cifar": ((3, 4), 10), "seed_torch_resnet50": ((3, 4, 6, 3), 1000)}


def seed_torch_net(preset: str) -> nn.Module:
    """The seed's network with every tensor random, BN statistics too (fresh ones hide swaps), in eval mode."""
    torch.manual_seed(0)
    return randomize_torch(SeedResNet(*SEED_TORCH[preset]))
