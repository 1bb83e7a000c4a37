"""``resnet-parity summary``: each top-level layer's output shape, as the seed tutorials print it."""

from __future__ import annotations

import argparse

from .. import frameworks
from ..spec import list_specs
from ..summary import summary
from .base import COUNT, EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, choices=list_specs(), metavar="NAME", help="preset name")
    parser.add_argument("--framework", required=True, choices=[*frameworks.FRAMEWORKS, *frameworks.ALIASES])
    parser.add_argument("--size", type=COUNT, default=None, help="input height and width (default: the preset's)")
    parser.add_argument("--in-channels", type=COUNT, default=None)
    parser.add_argument("--num-classes", type=COUNT, default=None)
    parser.add_argument("--batch", type=COUNT, default=1)


def run(args: argparse.Namespace) -> int:
    name = frameworks.canonical_name(args.framework)
    rows = summary(args.arch, name, size=args.size, batch=args.batch, in_channels=args.in_channels, num_classes=args.num_classes)
    print(f"{args.arch} in {frameworks.LABELS[name]} ({frameworks.load(name).LAYOUT})")
    width = max(len(layer) for layer, _ in rows)
    for layer, shape in rows:
        print(f"{layer:<{width}}  output shape: {shape}")
    return EXIT_OK
