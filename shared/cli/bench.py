"""``resnet-parity bench``: img/s of our models against each framework's reference model, side by side."""

from __future__ import annotations

import argparse
import json

from .. import frameworks
from ..bench import BenchReport, bench
from ..parity.report import jsonable
from ..spec import DTYPES, list_specs
from .base import COUNT, EXIT_OK, real


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Every model is built, called once (tracing and compilation: the first call), warmed up, then timed in "
        "interleaved rounds whose order rotates, so the machine's load falls on all alike. img/s is the median "
        "over rounds, with the slowest and fastest; 'ours / reference' is the median of the per-round speed "
        "ratios (> 1: ours is faster). References: torchvision (or a CIFAR ResNet in its style), keras.applications "
        "(or its style), the Flax ImageNet example's linen ResNet, from each framework package's optional references module. For figures, "
        "time one framework per process (--frameworks FW): in one process their thread pools compete.")
    parser.add_argument("--arch", required=True, choices=list_specs(), metavar="NAME", help="preset architecture")
    parser.add_argument("--frameworks", nargs="+", default=None, metavar="FW", help="subset (default: all installed)")
    parser.add_argument("--batch", type=COUNT, default=16, help="images per step (default 16)")
    parser.add_argument("--size", type=COUNT, default=None, help="input height and width (default: the preset's)")
    parser.add_argument("--mode", default="both", choices=("eval", "train", "both"),
                        help="a forward pass in eval mode, a training step, or both (default)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile for PyTorch, XLA (jit_compile=True) for Keras; JAX is always jitted")
    parser.add_argument("--dtype", default="float32", choices=[d for d in DTYPES if d != "float64"],
                        help="bfloat16/float16: each framework's mixed precision (references run in float32 only)")
    parser.add_argument("--repeats", type=COUNT, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--min-round", type=real(0), default=0.5, metavar="SECONDS",
                        help="each round repeats a step until it has run this long (default 0.5)")
    parser.add_argument("--no-reference", action="store_true", help="time our models only")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (schema_version 1)")


def run(args: argparse.Namespace) -> int:
    names = [frameworks.canonical_name(n) for n in args.frameworks] if args.frameworks else None
    report = bench(args.arch, targets=names, batch=args.batch, size=args.size, mode=args.mode, compile=args.compile,
                   dtype=args.dtype, repeats=args.repeats, min_round_s=args.min_round, references=not args.no_reference)
    print(json.dumps(jsonable(report.to_dict()), indent=2) if args.json else format_table(report))
    return EXIT_OK


def format_table(report: BenchReport) -> str:
    """The report for people: one row per candidate, then the speed ratios."""
    head = (f"{report.arch}, batch {report.batch}, {report.size}x{report.size}, {report.dtype}"
            f"{', compiled' if report.compile else ''}; median of {report.repeats} interleaved rounds "
            f"(load average {report.machine['load_average']:.1f} on {report.machine['cpus']} CPUs)")
    lines = [head, "",
             f"{'framework':<10} {'mode':<6} {'model':<34} {'img/s':>8} {'min..max':>15} {'build s':>8} "
             f"{'1st call s':>10} {'peak MB':>8}"]
    for c in report.candidates:
        d = c.to_dict(report.batch)
        peak = "-" if c.peak_mb is None else f"{c.peak_mb:.0f}"
        lines.append(f"{frameworks.LABELS[c.framework]:<10} {c.mode:<6} {c.label[:34]:<34} {d['img_s']:>8.1f} "
                     f"{d['img_s_min']:>7.1f}..{d['img_s_max']:<7.1f} {c.build_s:>8.2f} {c.first_call_s:>10.2f} "
                     f"{peak:>8}")
    if report.ratios:
        lines += ["", "ours / reference (speed; > 1: ours faster), median and min..max over rounds"]
        for r in report.ratios:
            lines.append(f"  {frameworks.LABELS[r.framework]:<10} {r.mode:<6} vs {r.reference:<40} "
                         f"{r.median:.2f} ({r.low:.2f}..{r.high:.2f})")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
