"""Eval-mode parity: port one framework's weights to the others and compare every block's output."""

from __future__ import annotations

import time

import numpy as np

from . import frameworks
from .errors import ParityInputError
from .spec import ResNetSpec, get_spec
from .weights import count_parameters, randomize, relative_error

# The stated bounds on max|a-b| / max|b| between frameworks (README, "Tolerances").
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def compare(arch: str, *, source: str = "torch", targets: list[str] | None = None, dtype: str = "float32",
            size: int | None = None, batch: int = 2, seed: int = 0) -> dict:
    """Port ``source``'s randomised weights to ``targets`` and compare every stage's output; a JSON-able report."""
    spec = get_spec(arch)
    size = spec.image_size if size is None else size
    source = frameworks.canonical_name(source)
    names = [frameworks.canonical_name(t) for t in (targets or frameworks.installed())]
    names = [source] + [n for n in names if n != source]
    if size < 1 or batch < 1:
        raise ParityInputError(f"size={size}, batch={batch}: both must be positive")
    timings: dict[str, dict[str, float]] = {}
    params, stats = count_parameters(spec)
    x = np.random.default_rng(seed).standard_normal((batch, size, size, spec.in_channels)).astype(dtype)

    outputs, counts = {}, {}
    weights = None
    with frameworks.numerics(names, dtype) as settings:
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
            counts[name] = count_parameters(spec, impl.export_weights(model))

    tol = TOLERANCE[dtype]
    stages = ["stem", *(f"layer{s}" for s in range(1, spec.num_stages + 1)), "fc"]
    outputs = {name: by_stage(spec, feats) for name, feats in outputs.items()}
    ref = outputs[source]
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
        "settings": settings, "results": rows, "passed": all(r["passed"] for r in rows),
    }


def by_stage(spec: ResNetSpec, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The features with each stage's output ('layer3', its last block's) beside the blocks'."""
    last = {plan.stage: plan.prefix for plan in spec.blocks()}
    return {**feats, **{f"layer{stage}": feats[prefix] for stage, prefix in last.items()}}


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
