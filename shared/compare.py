"""``resnet-parity compare``: port one framework's weights to the others and compare every stage."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from . import frameworks
from .cli import EXIT_FAIL, EXIT_OK
from .spec import get_spec, list_specs
from .train import TOLERANCE as TRAIN_TOLERANCE, format_parity, train_parity
from .weights import BN_STAT_SUFFIXES, count_parameters, randomize, relative_error

# The stated bounds on max|a-b| / max|b| between frameworks (README, "Tolerances").
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


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


def compare(arch: str, *, source: str = "torch", targets: list[str] | None = None, dtype: str = "float32",
            size: int | None = None, batch: int = 2, seed: int = 0) -> dict:
    """Port ``source``'s randomised weights to ``targets`` and compare every stage's output; a JSON-able report."""
    spec = get_spec(arch)
    size = size or spec.image_size
    source = frameworks.canonical_name(source)
    names = [frameworks.canonical_name(t) for t in (targets or frameworks.installed())]
    names = [source] + [n for n in names if n != source]
    if size < 1 or batch < 1:
        raise ValueError("--size and --batch must be positive")
    timings: dict[str, dict[str, float]] = {}
    params, stats = count_parameters(spec)
    x = np.random.default_rng(seed).standard_normal((batch, size, size, spec.in_channels)).astype(dtype)

    outputs, counts = {}, {}
    weights = None
    for name in names:
        t = timings.setdefault(name, {})
        start = time.perf_counter()
        impl = frameworks.load(name)
        t["import_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model = impl.build_model(spec, seed=seed, dtype=dtype)
        t["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        if weights is None:
            # randomise every tensor of the source, BN statistics included, then export it
            impl.import_weights(model, randomize(spec, seed, np.dtype(dtype)))
            weights = impl.export_weights(model)
        else:
            impl.import_weights(model, weights)
        t["port_s"] = time.perf_counter() - start
        start = time.perf_counter()
        outputs[name] = impl.features(model, x)
        t["forward_s"] = time.perf_counter() - start
        counts[name] = _count(impl.export_weights(model))

    tol = TOLERANCE[dtype]
    ref = outputs[source]
    stages = [k for k in ref if k.startswith(("stem", "layer"))] + ["fc"]
    rows = []
    for name in names:
        errors = {}
        for stage in stages:
            a, b = outputs[name][stage], ref[stage]
            if a.shape != b.shape:
                errors[stage] = {"max_abs": float("inf"), "relative": float("inf"), "shape": list(a.shape)}
                continue
            errors[stage] = {"max_abs": float(np.max(np.abs(a.astype(np.float64) - b))), "relative": relative_error(a, b)}
        ok = all(e["relative"] <= tol for e in errors.values()) and counts[name] == (params, stats)
        rows.append({
            "framework": name, "parameters": counts[name][0], "bn_statistics": counts[name][1],
            "errors": errors, "passed": ok, "timings": timings[name],
        })
    return {
        "arch": spec.name, "source": source, "dtype": dtype, "input_shape_nhwc": list(x.shape),
        "tolerance": tol, "expected_parameters": params, "expected_bn_statistics": stats,
        "results": rows, "passed": all(r["passed"] for r in rows),
    }


def _count(weights: dict[str, np.ndarray]) -> tuple[int, int]:
    stats = sum(v.size for k, v in weights.items() if k.endswith(BN_STAT_SUFFIXES))
    return sum(v.size for v in weights.values()) - stats, stats


def format_table(report: dict) -> str:
    """The human-readable table: one row per framework, logits and every stage."""
    stages = list(report["results"][0]["errors"])
    head = f"{'framework':<10} {'params':>11} {'BN stats':>9} {'logits abs':>10} {'logits rel':>10} " + " ".join(
        f"{s:>8}" for s in stages if s != "fc") + f" {'result':>6}  time (import/build/port/forward s)"
    lines = [
        f"resnet-parity compare: {report['arch']}, source {report['source']}, {report['dtype']}, "
        f"input NHWC {tuple(report['input_shape_nhwc'])}, tolerance {report['tolerance']:.0e} (max|a-b|/max|b|)",
        f"expected parameters {report['expected_parameters']:,} + {report['expected_bn_statistics']:,} BN running statistics",
        head, "-" * len(head),
    ]
    for r in report["results"]:
        e, t = r["errors"], r["timings"]
        lines.append(
            f"{frameworks.LABELS[r['framework']]:<10} {r['parameters']:>11,} {r['bn_statistics']:>9,} "
            f"{e['fc']['max_abs']:>10.2e} {e['fc']['relative']:>10.2e} "
            + " ".join(f"{e[s]['relative']:>8.1e}" for s in stages if s != "fc")
            + f" {'PASS' if r['passed'] else 'FAIL':>6}  "
            + "/".join(f"{t[k]:.2f}" for k in ("import_s", "build_s", "port_s", "forward_s"))
        )
    lines.append("stage columns: relative error of each stage's output against the source")
    lines.append("all frameworks agree" if report["passed"] else "MISMATCH: at least one framework differs")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.train_steps:
        report = train_parity(args.arch, args.train_steps, targets=args.frameworks, dtype=args.dtype,
                              batch=args.batch or 8, size=args.size, seed=args.seed)
        print(json.dumps(report, indent=2) if args.json else format_parity(report))
        return EXIT_OK if report["passed"] else EXIT_FAIL
    report = compare(args.arch, source=args.source, targets=args.frameworks, dtype=args.dtype,
                     size=args.size, batch=args.batch or 2, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return EXIT_OK if report["passed"] else EXIT_FAIL
