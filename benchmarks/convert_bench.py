"""Convert a resnet50 checkpoint between every pair of formats: time beyond the framework imports, peak memory.

Each conversion runs in a fresh process that first imports the frameworks it needs and converts a
tiny resnet20 the same way (so first-call costs of the frameworks are not counted), then converts
resnet50 with ``shared.convert.convert`` (no verification unless --verify). Reported:
- time: reading plus writing, as ``convert`` times them (framework imports excluded);
- peak: the process's peak resident memory above its resident memory just before the conversion
  (Linux /proc/self/status VmHWM, reset through /proc/self/clear_refs), against the checkpoint size,
  the float32 bytes of every tensor.
The keras.applications formats (keras-h5, keras-app) hold keras_resnet50, so pairs involving them use it.
Other libraries' formats (--libraries) are timed against safetensors (the canonical form, read and written in
0.1 s), both ways (ONNX as a target only), each with the ResNet-50 the library has: hf resnet50, timm and keras-hub
resnet50d (vd), flax-linen resnet50 with the Flax example's padding, onnx resnet50.
Targets: < 2 s and < 3x the checkpoint size.

    python benchmarks/convert_bench.py [--verify] [--only FMT] [--libraries] [--json FILE] [--markdown]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from itertools import permutations
from pathlib import Path

import numpy as np

from shared import checkpoint, frameworks
from shared.convert import convert
from shared.spec import get_spec
from shared.weights import canonical_shapes, randomize

NAMES = {
    "torch": "model.pt", "safetensors": "model.safetensors", "keras": "model.keras",
    "keras-weights": "model.weights.h5", "orbax": "model_orbax", "msgpack": "model.msgpack",
    "keras-h5": "model.h5", "keras-app": "model.weights.h5",
}
KERAS_APPLICATIONS = ("keras-h5", "keras-app")
# other libraries' formats -> (the ResNet-50 measured, the small network of the warm-up), and what they pair with
LIBRARIES = {
    "hf": ("resnet50", "resnet18"), "timm": ("resnet50d", "resnet18d"), "keras-hub": ("resnet50d", "resnet18"),
    "flax-linen": ("flax_resnet50", "flax_resnet18"), "onnx": ("resnet50", "resnet20"),
}
NAMES.update({"hf": "model_hf", "timm": "model_timm.safetensors", "keras-hub": "model_keras_hub",
              "flax-linen": "model_linen.msgpack", "onnx": "model.onnx"})
PARTNERS = ("safetensors",)
# not presets: the Flax example's network pads like no preset does, and no file format but its own says so
SPECS = {f"flax_{name}": get_spec(name, padding="tf_same") for name in ("resnet18", "resnet50")}
TIME_TARGET_S, MEMORY_TARGET = 2.0, 3.0


def spec_of(arch: str):
    return SPECS.get(arch) or get_spec(arch)


def arch_for(src: str, dst: str, warm: bool = False) -> str:
    library = next((f for f in (src, dst) if f in LIBRARIES), None)
    if library:
        return LIBRARIES[library][warm]
    if warm:
        return "resnet20"
    return "keras_resnet50" if {src, dst} & set(KERAS_APPLICATIONS) else "resnet50"


def all_pairs(libraries: bool = False) -> list[tuple[str, str]]:
    if libraries:
        return [pair for f in LIBRARIES for g in PARTNERS for pair in ((f, g), (g, f)) if pair[0] != "onnx"]
    generic = [f for f in NAMES if f not in KERAS_APPLICATIONS and f not in LIBRARIES]
    return list(permutations(generic, 2)) + [
        (a, b) for a, b in permutations(NAMES, 2) if {a, b} & set(KERAS_APPLICATIONS) and not {a, b} & set(LIBRARIES)
    ]


def source_path(folder: Path, arch: str, fmt: str) -> Path:
    return folder / arch / f"{fmt}-{NAMES[fmt]}"


def prepare_sources(folder: Path, pairs: list[tuple[str, str]]) -> None:
    """Every source file the pairs need, written from random weights (every tensor, BN statistics included)."""
    # and the small networks of the warm-up conversions
    needed = {(arch_for(a, b, warm), warm_format(a) if warm else a) for a, b in pairs for warm in (False, True)}
    for arch in sorted({arch for arch, _ in needed}):
        (folder / arch).mkdir(parents=True, exist_ok=True)
        weights = randomize(spec_of(arch), seed=0)
        for _, fmt in sorted(f for f in needed if f[0] == arch):
            checkpoint.Destination.open(source_path(folder, arch, fmt), fmt, force=True).write(weights, spec_of(arch))


def warm_format(fmt: str) -> str:
    return "keras-weights" if fmt in KERAS_APPLICATIONS else fmt


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size


def child(folder: Path, src: str, dst: str, verify: bool) -> dict:
    """One measurement, in this (fresh) process."""
    start = time.perf_counter()
    for fmt in (checkpoint.FORMATS[src], checkpoint.FORMATS[dst]):
        if fmt.framework:
            frameworks.load_checkpoints(fmt.framework)
    if verify:
        frameworks.load("torch")
    imports = time.perf_counter() - start
    out = Path(tempfile.mkdtemp(dir=folder))
    # the same frameworks, the same code paths as far as a small model can take them (keras.applications has none)
    warm = [warm_format(f) for f in (src, dst)]
    if warm[0] != warm[1]:
        small = arch_for(src, dst, warm=True)
        convert(source_path(folder, small, warm[0]), out / f"warm-{NAMES[warm[1]]}", arch=SPECS.get(small),
                dst_format=warm[1], verify_output=verify)
    arch = arch_for(src, dst)
    size = 4 * sum(int(np.prod(s)) for s in canonical_shapes(spec_of(arch)).values())
    gc.collect()
    reset_peak()
    base = memory_kb("VmRSS")
    report = convert(source_path(folder, arch, src), out / NAMES[dst], arch=SPECS.get(arch), src_format=src,
                     dst_format=dst, verify_output=verify)
    peak = (memory_kb("VmHWM") - base) * 1024
    t = report["timings"]
    return {
        "from": src, "to": dst, "arch": arch, "checkpoint_bytes": size, "dst_bytes": report["bytes"],
        "time_s": t["read_s"] + t["write_s"] + t.get("verify_s", 0.0), "read_s": t["read_s"], "write_s": t["write_s"],
        "verify_s": t.get("verify_s"), "import_s": imports, "peak_bytes": peak, "peak_ratio": peak / size,
        "passed": report["passed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="include verification (not part of the targets)")
    parser.add_argument("--only", metavar="FMT", help="only pairs involving this format")
    parser.add_argument("--libraries", action="store_true", help="other libraries' formats instead of ours")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--markdown", action="store_true", help="also print a from x to grid of time and peak")
    parser.add_argument("--dir", help="working directory (default: a temporary one)")
    parser.add_argument("--child", nargs=3, metavar=("DIR", "FROM", "TO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.child[2], args.verify)))
        return 0

    pairs = [p for p in all_pairs(args.libraries) if args.only in (None, *p)]
    folder = Path(args.dir or tempfile.mkdtemp(prefix="convert-bench-"))
    print(f"writing source checkpoints in {folder} ...", flush=True)
    prepare_sources(folder, pairs)
    head = (f"{'from':<14}{'to':<14}{'arch':<15}{'time s':>8}{'read':>7}{'write':>7}{'peak MB':>9}{'x ckpt':>8}"
            f"{'imports s':>10}  result")
    print(head)
    print("-" * len(head))
    rows = []
    for src, dst in pairs:
        cmd = [sys.executable, __file__, "--child", str(folder), src, dst] + (["--verify"] if args.verify else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{src:<14}{dst:<14}FAILED: {done.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        ok = row["time_s"] < TIME_TARGET_S and row["peak_ratio"] < MEMORY_TARGET and row["passed"]
        print(f"{src:<14}{dst:<14}{row['arch']:<15}{row['time_s']:>8.2f}{row['read_s']:>7.2f}{row['write_s']:>7.2f}"
              f"{row['peak_bytes'] / 1e6:>9.0f}{row['peak_ratio']:>8.2f}{row['import_s']:>10.1f}  "
              f"{'ok' if ok else 'OVER TARGET'}",
              flush=True)
    if rows:
        size = rows[0]["checkpoint_bytes"] / 1e6
        print(f"checkpoint size: {size:.1f} MB (float32); targets: < {TIME_TARGET_S} s, peak < {MEMORY_TARGET}x; "
              f"worst time {max(r['time_s'] for r in rows):.2f} s, worst peak {max(r['peak_ratio'] for r in rows):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown and rows:
        print(markdown_grid(rows))
    return 0


def markdown_grid(rows: list[dict]) -> str:
    """A table with a row per source format and a column per target: 'seconds / peak x checkpoint'."""
    cells = {(r["from"], r["to"]): f"{r['time_s']:.2f} s / {r['peak_ratio']:.2f}x" for r in rows}
    formats = [f for f in NAMES if any(f in pair for pair in cells)]
    lines = ["| from \\ to | " + " | ".join(formats) + " |", "|---" * (len(formats) + 1) + "|"]
    for src in formats:
        lines.append(f"| {src} | " + " | ".join(cells.get((src, dst), "-") for dst in formats) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
