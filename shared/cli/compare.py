"""``resnet-parity compare``: the parity check of the three frameworks, as a command with an exit code."""

from __future__ import annotations

import argparse
import json

from .. import frameworks
from ..parity import TOLERANCE, compare, format_table
from ..spec import list_specs
from ..train_parity import TOLERANCE as TRAIN_TOLERANCE, format_parity, train_parity
from .base import EXIT_FAIL, EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, choices=list_specs(), metavar="NAME", help="preset name")
    parser.add_argument("--source", default="torch", choices=list(frameworks.FRAMEWORKS), help="framework whose weights are ported")
    parser.add_argument("--dtype", default="float32", choices=list(TOLERANCE))
    parser.add_argument("--size", type=int, default=None, help="input height and width (default: the preset's)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 2; 8 with --train-steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frameworks", nargs="+", default=None, metavar="FW", help="subset to compare (default: all installed)")
    parser.add_argument("--train-steps", type=int, default=0, metavar="K",
                        help="instead of eval mode: train K steps from the same weights and batches and compare "
                             "gradients, parameters and BN statistics (tolerance "
                             f"{TRAIN_TOLERANCE['float32']:.0e} float32, {TRAIN_TOLERANCE['float64']:.0e} float64)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    if args.train_steps:
        report = train_parity(args.arch, args.train_steps, targets=args.frameworks, dtype=args.dtype,
                              batch=8 if args.batch is None else args.batch, size=args.size, seed=args.seed)
        print(json.dumps(report, indent=2) if args.json else format_parity(report))
        return EXIT_OK if report["passed"] else EXIT_FAIL
    report = compare(args.arch, source=args.source, targets=args.frameworks, dtype=args.dtype,
                     size=args.size, batch=2 if args.batch is None else args.batch, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return EXIT_OK if report["passed"] else EXIT_FAIL
