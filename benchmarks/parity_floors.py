"""Where TOLERANCE's k and atol come from: honest ports against the float64 floor, across presets, seeds and sources.

For each dtype and mode this runs ``compare`` (eval) or ``train_parity`` (5 training steps) on correct
ports and records every tensor's (error, floor) pair. For candidate values of atol it prints the k that
every honest tensor needs, k = max((error - atol) / floor), and the smallest floors seen, so the table in
``shared/parity.py`` can be read off. Raw pairs go to ``--out`` as JSON.

    python benchmarks/parity_floors.py --quick          # a few minutes
    python benchmarks/parity_floors.py --out floors.json  # the sweep the README quotes
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from shared.parity import UNIT_ROUNDOFF, compare, train_parity
from shared.spec import get_spec

EVAL_PRESETS = ["resnet18", "resnet50", "resnet20", "keras_resnet50v2", "seed_tf_cifar"]
TRAIN_PRESETS = [("resnet20", 32), ("resnet18", 64)]  # the sizes compare --train-steps uses by default
SOURCES = ["torch", "tf", "jax"]
DTYPES = ["float32", "bfloat16", "float16"]


def pairs(report) -> list[tuple[float, float]]:
    """(error, floor) of every target tensor (the reference's own rows are floor against floor)."""
    return [(c.error, c.floor) for r in report.results if not r.reference for c in r.checks]


def worst(report) -> str:
    """The target tensor that needs the largest k, for the log."""
    c = max((c for r in report.results if not r.reference for c in r.checks), key=lambda c: c.error / max(c.floor, 1e-30))
    return f"{c.name} {c.error:.1e} / {c.floor:.1e}"


def needed_k(found: list[tuple[float, float]], atol: float) -> float:
    """The smallest k with error <= k * floor + atol for every pair."""
    return max(((e - atol) / f if f > 0 else (0.0 if e <= atol else float("inf"))) for e, f in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer presets")
    parser.add_argument("--modes", nargs="+", default=["eval", "train"])
    parser.add_argument("--dtypes", nargs="+", default=DTYPES)
    parser.add_argument("--presets", nargs="+", help="only these presets")
    parser.add_argument("--out", help="write every (error, floor) pair here")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    found: dict[str, list] = {}
    for mode, dtype in itertools.product(args.modes, args.dtypes):
        key = f"{mode} {dtype}"
        found[key] = []
        if mode == "eval":
            runs = [(arch, None, source, seed) for arch in EVAL_PRESETS[: 2 if args.quick else None]
                    for source in SOURCES for seed in seeds if not args.presets or arch in args.presets]
        else:
            runs = [(arch, size, source, seed) for arch, size in TRAIN_PRESETS[: 1 if args.quick else None]
                    for source in SOURCES for seed in seeds if not args.presets or arch in args.presets]
        for arch, size, source, seed in runs:
            start = time.perf_counter()
            if mode == "eval":
                report = compare(arch, source=source, dtype=dtype, size=min(64, get_spec(arch).image_size), seed=seed)
            else:
                report = train_parity(arch, 5, source=source, dtype=dtype, size=size, seed=seed)
            got = pairs(report)
            found[key].append({"arch": arch, "source": source, "seed": seed, "pairs": got})
            print(f"{key:16} {arch:17} {source:5} seed {seed}: {'PASS' if report.passed else 'FAIL'}, k needed {needed_k(got, 0.0):6.2f} (atol 0), "
                  f"smallest floor {min(f for _, f in got):.1e}, worst {worst(report)}, {time.perf_counter() - start:.0f} s",
                  flush=True)
    print("\nsummary: the k every honest tensor needs, for candidate atols (u = the dtype's unit roundoff)")
    for key, runs in found.items():
        u = UNIT_ROUNDOFF[key.split()[1]]
        every = [p for run in runs for p in run["pairs"]]
        floors = np.array([f for _, f in every])
        cells = ", ".join(f"atol {m:g}u: k {needed_k(every, m * u):.2f}" for m in (0, 0.5, 1, 4, 16))
        print(f"{key:16} {len(every):6} tensors, floors {floors.min():.1e}..{floors.max():.1e}; {cells}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(found, f)


if __name__ == "__main__":
    main()
