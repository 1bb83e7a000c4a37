"""``resnet-parity convert``: read a checkpoint in one format, write it in another, and show both compute the same.

The new file is written beside DST under a temporary name, read back, run on one random batch
against the source weights, and renamed into place only if it agrees: a failed conversion leaves
no DST behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import time
from pathlib import Path

import numpy as np

from . import checkpoint, frameworks
from .checkpoint import FORMATS, CheckpointError, Format
from .cli import EXIT_FAIL, EXIT_OK, CliError
from .compare import TOLERANCE
from .spec import PRESETS, ResNetSpec, list_specs
from .weights import canonical_shapes, relative_error

VERIFY_SIZE = 64  # input height and width for verification (smaller presets use their own size): every weight takes part
VERIFY_BATCH = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    formats = "; ".join(f"{name}: {f.label}" + (f" ({' '.join(f.suffixes)})" if f.suffixes else "")
                        for name, f in FORMATS.items())
    parser.epilog = (
        f"formats: {formats}. A DST without a suffix is an Orbax directory. After writing, SRC and DST are loaded "
        f"into their frameworks and run on one random batch; DST is kept only if the logits agree to "
        f"{TOLERANCE['float32']:.0e} (relative), else exit 1. Bad input: one line naming the file, exit 2."
    )
    parser.add_argument("src", metavar="SRC", help="checkpoint to read: a file, or an Orbax directory")
    parser.add_argument("dst", metavar="DST", help="checkpoint to write; its suffix picks the format")
    parser.add_argument("--arch", choices=list_specs(), metavar="NAME",
                        help="preset of SRC (default: what SRC records, else inferred from its weights)")
    parser.add_argument("--from", dest="src_format", choices=list(FORMATS), metavar="FMT",
                        help="format of SRC (default: by suffix)")
    parser.add_argument("--to", dest="dst_format", choices=[n for n, f in FORMATS.items() if f.writable], metavar="FMT",
                        help="format of DST (default: by suffix)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing DST")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running both files on a random batch")
    parser.add_argument("--keep-dtype", action="store_true",
                        help="keep float16/bfloat16/float64 weights (default: float32)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="convert weights holding NaN or Inf instead of refusing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random verification batch")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def verifier(fmt: Format) -> str:
    """The framework that loads a file of ``fmt`` for verification (safetensors: PyTorch when installed)."""
    if fmt.framework is not None:
        return fmt.framework
    installed = frameworks.installed()
    if not installed:
        raise CliError("verification needs PyTorch, TensorFlow or JAX installed; pass --no-verify")
    return "torch" if "torch" in installed else installed[0]


def _checkpoint_module(framework: str):
    return importlib.import_module(f"{frameworks.load(framework).__name__}.checkpoint")


def logits(framework: str, weights: dict[str, np.ndarray], spec: ResNetSpec, x: np.ndarray) -> np.ndarray:
    """The logits of ``x`` from a float32 model of ``framework`` holding ``weights``."""
    model = _checkpoint_module(framework).model_from_weights(spec, checkpoint.as_float32(weights, spec))
    return frameworks.load(framework).features(model, x)["fc"]


def output_error(a: np.ndarray, b: np.ndarray) -> float:
    """relative_error, where NaN/Inf (allowed with --allow-nonfinite) must sit in the same places."""
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(finite_a, finite_b) or not np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True):
        return float("inf")
    return relative_error(a[finite_a], b[finite_b])


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, NaN payloads included."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


def verify(src: Path, fin: Format, path: Path, fout: Format, spec: ResNetSpec, pair: tuple[str, str], *,
           keep_dtype: bool, allow_nonfinite: bool, seed: int) -> dict:
    """Load SRC and the written file afresh, each into its framework, and run the same random batch through both."""
    size = min(spec.image_size, VERIFY_SIZE)
    x = np.random.default_rng(seed).standard_normal((VERIFY_BATCH, size, size, spec.in_channels)).astype(np.float32)
    weights, _ = checkpoint.prepare(checkpoint.read(src, fin, spec).weights, spec, src, keep_dtype=keep_dtype,
                                    allow_nonfinite=allow_nonfinite)
    back = checkpoint.read(path, fout)
    error = output_error(logits(pair[1], back.weights, spec, x), logits(pair[0], weights, spec, x))
    tol = TOLERANCE["float32"]
    return {
        "frameworks": list(pair), "input_shape_nhwc": list(x.shape), "relative_error": error, "tolerance": tol,
        "weights_identical": all(identical(back.weights[k], weights[k]) for k in canonical_shapes(spec)),
        "passed": bool(error <= tol),
    }


def describe(spec: ResNetSpec) -> str:
    """'resnet20', or 'resnet20 with num_classes=100' for a preset with overrides."""
    base = PRESETS.get(spec.name)
    if base is None:
        return f"{spec.name} (not a preset)"
    extra = ", ".join(f"{f.name}={getattr(spec, f.name)}" for f in dataclasses.fields(spec)
                      if getattr(spec, f.name) != getattr(base, f.name))
    return f"{spec.name} with {extra}" if extra else spec.name


def convert(
    src: str | Path, dst: str | Path, *, arch: str | None = None, src_format: str | None = None,
    dst_format: str | None = None, force: bool = False, verify_output: bool = True, keep_dtype: bool = False,
    allow_nonfinite: bool = False, seed: int = 0,
) -> dict:
    """Convert ``src`` to ``dst``; a JSON-able report. Bad input raises CheckpointError (one line)."""
    src, dst = Path(src), Path(dst)
    fin = checkpoint.detect_format(src, src_format)
    fout = checkpoint.detect_format(dst, dst_format, writing=True)
    checkpoint.check_source(src, fin)
    checkpoint.check_destination(dst, force=force)
    if dst.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: is SRC itself; write the conversion elsewhere")
    checkers = (verifier(fin), verifier(fout)) if verify_output else ()
    timings = {}

    start = time.perf_counter()
    for name in {fin.framework, fout.framework, *checkers} - {None}:
        _checkpoint_module(name)
    timings["import_s"] = time.perf_counter() - start

    start = time.perf_counter()
    ckpt = checkpoint.read(src, fin, arch)
    spec, notes = checkpoint.architecture(ckpt, src, arch)
    notes = ckpt.notes + notes
    weights, dtype_notes = checkpoint.prepare(ckpt.weights, spec, src, keep_dtype=keep_dtype,
                                              allow_nonfinite=allow_nonfinite, target=fout)
    del ckpt  # the prepared dict holds what is needed; let the rest go before writing
    dtype = checkpoint.dtype_of(weights, spec)
    timings["read_s"] = time.perf_counter() - start

    verification = None
    with checkpoint.staged(dst, force=force) as stage:
        start = time.perf_counter()
        # the writer may empty `weights` as it goes: verification reads SRC again, as a user would
        checkpoint.write_to(stage.path, weights, spec, fout, dst=dst, consume=True)
        timings["write_s"] = time.perf_counter() - start
        size = _size(stage.path)
        if verify_output:
            start = time.perf_counter()
            verification = verify(src, fin, stage.path, fout, spec, checkers, keep_dtype=keep_dtype,
                                  allow_nonfinite=allow_nonfinite, seed=seed)
            timings["verify_s"] = time.perf_counter() - start
        if verification is None or verification["passed"]:
            stage.commit()
    keys = canonical_shapes(spec)
    return {
        "src": str(src), "dst": str(dst), "from": fin.name, "to": fout.name, "arch": spec.name,
        "architecture": describe(spec), "spec": dataclasses.asdict(spec), "notes": notes + dtype_notes,
        "tensors": len(keys), "values": int(sum(int(np.prod(s)) for s in keys.values())),
        "dtype": dtype, "bytes": size, "written": verification is None or verification["passed"],
        "verification": verification, "timings": timings,
        "passed": verification is None or verification["passed"],
    }


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def format_report(report: dict) -> str:
    """The human-readable report."""
    t = report["timings"]
    lines = [
        f"{report['src']} ({FORMATS[report['from']].label}) -> {report['dst']} ({FORMATS[report['to']].label})",
        f"architecture: {report['architecture']}",
        *(f"  note: {note}" for note in report["notes"]),
    ]
    if report["written"]:
        lines.append(f"wrote {report['dst']}: {report['tensors']} tensors, {report['values']:,} values, {report['dtype']}, "
                     f"{report['bytes'] / 1e6:.1f} MB; read {t['read_s']:.2f} s, write {t['write_s']:.2f} s "
                     f"(framework imports {t['import_s']:.1f} s)")
    v = report["verification"]
    if v is None:
        lines.append("not verified (--no-verify)")
    else:
        src, dst = (frameworks.LABELS[f] for f in v["frameworks"])
        lines.append(
            f"verify: SRC weights in {src} vs DST read back in {dst}, random batch NHWC {tuple(v['input_shape_nhwc'])}: "
            f"logits relative error {v['relative_error']:.1e} (tolerance {v['tolerance']:.0e}), weights bit-identical: "
            f"{'yes' if v['weights_identical'] else 'no'} -> {'PASS' if v['passed'] else 'FAIL'}"
        )
        if not v["passed"]:
            lines.append(f"{report['dst']} was not written: the converted file does not compute what {report['src']} does")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = convert(
        args.src, args.dst, arch=args.arch, src_format=args.src_format, dst_format=args.dst_format, force=args.force,
        verify_output=args.verify, keep_dtype=args.keep_dtype, allow_nonfinite=args.allow_nonfinite, seed=args.seed,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return EXIT_OK if report["passed"] else EXIT_FAIL
