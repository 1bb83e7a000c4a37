"""``resnet-parity compare``: the parity check of the three frameworks, as a command with an exit code and reports for CI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import frameworks
from ..checkpoint import FORMATS, Source
from ..checkpoint.destination import write_bytes
from ..parity import FIXED_FLOAT32, TOLERANCE, ParityReport, compare, train_parity
from ..parity.image import compare_image
from ..parity.report import jsonable
from ..spec import DTYPES, list_specs
from .base import COUNT, EXIT_FAIL, EXIT_OK, SEED, CliError, add_key_options, flags, integer, output_file, real
from .report import format_junit, format_table, is_our_junit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    rules = "; ".join(f"{dtype}: k={b['eval'].k:g}, atol={b['eval'].atol:.1e}"
                      + ("" if b["train"] == b["eval"] else f" (training: k={b['train'].k:g}, atol={b['train'].atol:.1e})")
                      for dtype, b in TOLERANCE.items() if dtype != "float64")
    parser.epilog = (
        "Each framework runs the same weights and inputs in --dtype; the reference (--source) also runs in float64, "
        "the truth. A tensor passes when its error against the truth is at most k times the reference's own error "
        f"plus atol ({rules}); float64 runs must agree to {TOLERANCE['float64']['eval'].atol:.0e} (eval) and "
        f"{TOLERANCE['float64']['train'].atol:.0e} (training). --image runs a photograph through the preprocessing "
        "the source expects (its file's record, its library's documented default) for that check, and reports apart "
        "how far the logits move under each framework's usual preprocessing (torchvision's, keras.applications', "
        "the Flax ImageNet example's); that does not change the exit code. Exit 0 pass, 1 mismatch, 2 bad input.")
    parser.add_argument("--arch", choices=list_specs(), metavar="NAME",
                        help="preset (default with --weights: what the file records, else inferred from its weights)")
    parser.add_argument("--weights", metavar="FILE", help="a checkpoint in any format convert reads, instead of random weights")
    parser.add_argument("--from", dest="weights_format", choices=list(FORMATS), metavar="FMT",
                        help="format of --weights (default: by suffix and content)")
    add_key_options(parser)
    parser.add_argument("--input", metavar="FILE.npy", help="an NHWC float array to run instead of a random batch")
    parser.add_argument("--image", metavar="PHOTO", help="a photograph (JPEG, PNG, ...) to run, prepared as the source "
                                                         "expects; the preprocessing's effect is reported apart")
    parser.add_argument("--source", default="torch", choices=list(frameworks.FRAMEWORKS),
                        help="the reference framework: its weights are ported and it runs the float64 truth")
    parser.add_argument("--frameworks", nargs="+", default=None, metavar="FW", help="subset to compare (default: all installed)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="bfloat16/float16 run each framework's mixed precision (float32 parameters)")
    parser.add_argument("--size", type=COUNT, default=None, help="input height and width (default: the preset's; 64 at most "
                                                               "with --train-steps)")
    parser.add_argument("--batch", type=COUNT, default=None, help="batch size (default 2; 8 with --train-steps)")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--train-steps", type=integer(0), default=0, metavar="K",
                        help="instead of eval mode: train K steps from the same weights and batches and check logits, "
                             "gradients, parameters and BN statistics after 1 and K steps")
    parser.add_argument("--devices", type=COUNT, default=1, metavar="N",
                        help="with --train-steps: every framework trains on N replicas of its own engine (global batch "
                             "--batch), checked against --source on one device")
    parser.add_argument("--sync-bn", action="store_true",
                        help="with --devices: BatchNorm over the global batch (reference: one device, the whole batch); "
                             "default: per replica (reference: one device normalising each shard on its own)")
    parser.add_argument("--tolerance", type=real(0), nargs="?", const=FIXED_FLOAT32, default=None, metavar="X",
                        help=f"a fixed bound on the pairwise relative error instead of the float64 floor "
                             f"(default X: {FIXED_FLOAT32:.0e}); no float64 run")
    parser.add_argument("--k", type=real(0, above=True), default=None, metavar="K",
                        help="the floor rule's margin instead of the table's k above: a tensor passes while its error "
                             "is at most K times the reference's own error plus atol, so K twice the table's lets "
                             "every tensor be twice as far from the truth (not with --tolerance)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="where every framework runs")
    parser.add_argument("--per-layer", action="store_true", help="print every block (every tensor with --train-steps)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (schema_version 1)")
    parser.add_argument("--junit", metavar="FILE", help="also write JUnit XML: one test case per framework pair "
                                                        "(replaces a report compare wrote; any other file needs --force)")
    parser.add_argument("--force", action="store_true", help="let --junit replace a file that is not a JUnit report of "
                                                             "compare (never one of the command's inputs)")
    parser.add_argument("--warn-only", action="store_true", help="exit 0 on a mismatch (the report still says FAIL)")


def run(args: argparse.Namespace) -> int:
    if args.arch is None and args.weights is None:
        raise CliError("pass --arch NAME, or --weights FILE to check a checkpoint")
    if (args.strip_prefix is not None or args.drop_unexpected) and args.weights is None:
        raise CliError("--strip-prefix and --drop-unexpected read the keys of --weights FILE")
    if args.image and (args.input or args.train_steps or args.batch is not None):
        raise CliError("--image is one photograph in eval mode: drop --input, --train-steps and --batch")
    if (args.devices != 1 or args.sync_bn) and not args.train_steps:
        raise CliError("--devices and --sync-bn check the data-parallel training step; add --train-steps K")
    if args.sync_bn and args.devices < 2:
        raise CliError("--sync-bn synchronises BatchNorm across replicas; it needs --devices N with N >= 2")
    if args.k is not None and args.tolerance is not None:
        raise CliError("--k sets the margin of the float64-floor rule and --tolerance replaces that rule with a fixed "
                       "bound: pass one of them")
    if args.train_steps and args.input:
        raise CliError("--input is for eval mode; --train-steps trains on random batches")
    if args.junit:
        output_file(args.junit, "--junit", inputs={"--weights": args.weights, "--input": args.input,
                                                   "--image": args.image},
                    force=args.force, ours=is_our_junit, what="a JUnit report of compare")
    weights = None if args.weights is None else Source.open(
        args.weights, args.weights_format, option="weights_format", strip_prefix=args.strip_prefix,
        drop_unexpected=args.drop_unexpected)
    common = dict(weights=weights, source=args.source, targets=args.frameworks, dtype=args.dtype, size=args.size,
                  seed=args.seed, tolerance=args.tolerance, k=args.k, device=args.device)
    if args.train_steps:
        report: ParityReport = train_parity(args.arch, args.train_steps, batch=8 if args.batch is None else args.batch,
                                            devices=args.devices, sync_bn=args.sync_bn, **common)
        if report is None:  # another process of a multi-process launch: process 0 reports
            return EXIT_OK
    elif args.image:
        report = compare_image(args.image, args.arch, **common)
    else:
        report = compare(args.arch, inputs=args.input, batch=2 if args.batch is None else args.batch, **common)
    report.notes = [flags(note) for note in report.notes]
    print(json.dumps(jsonable(report.to_dict()), indent=2) if args.json else format_table(report, args.per_layer))
    if args.junit:
        write_bytes(Path(args.junit), format_junit(report).encode())
    return EXIT_OK if report.passed or args.warn_only else EXIT_FAIL
