"""``resnet-parity summary``: each top-level layer's output shape, as the seed tutorials print it."""

from __future__ import annotations

import argparse

import numpy as np

from . import frameworks
from .cli import EXIT_OK
from .spec import get_spec, list_specs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, choices=list_specs(), metavar="NAME", help="preset name")
    parser.add_argument("--framework", required=True, choices=[*frameworks.FRAMEWORKS, *frameworks.ALIASES])
    parser.add_argument("--size", type=int, default=None, help="input height and width (default: the preset's)")
    parser.add_argument("--in-channels", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)


def summary(arch: str, framework: str, *, size: int | None = None, batch: int = 1, **overrides) -> list[tuple[str, tuple[int, ...]]]:
    """(layer, output shape in the framework's native layout) for each top-level layer."""
    spec = get_spec(arch, **{k: v for k, v in overrides.items() if v is not None})
    name = frameworks.canonical_name(framework)
    impl = frameworks.load(name)
    model = impl.build_model(spec)
    size = size or spec.image_size
    feats = impl.features(model, np.zeros((batch, size, size, spec.in_channels), np.float32))
    native = {"torch": lambda s: (s[0], s[3], s[1], s[2]) if len(s) == 4 else s}.get(name, lambda s: s)
    return [(layer, tuple(int(d) for d in native(v.shape))) for layer, v in feats.items()]


def run(args: argparse.Namespace) -> int:
    name = frameworks.canonical_name(args.framework)
    rows = summary(args.arch, name, size=args.size, batch=args.batch, in_channels=args.in_channels, num_classes=args.num_classes)
    layout = "NCHW" if name == "torch" else "NHWC"
    print(f"{args.arch} in {frameworks.LABELS[name]} ({layout})")
    width = max(len(layer) for layer, _ in rows)
    for layer, shape in rows:
        print(f"{layer:<{width}}  output shape: {shape}")
    return EXIT_OK
