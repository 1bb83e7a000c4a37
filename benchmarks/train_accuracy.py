"""Train the embedded ``digits`` recipe in each framework; print held-out accuracy and wall time.

    python benchmarks/train_accuracy.py [--frameworks torch tf jax] [--epochs N] [--out DIR]

Exits 1 when a framework stays below the 90% the README promises.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from shared import frameworks
from shared.recipe import get_recipe
from shared.train import fit

TARGET = 0.90


def measure(name: str, *, epochs: int | None = None, seed: int = 0, out: str) -> dict:
    """Train the digits recipe in one framework; its final test accuracy and seconds (imports excluded)."""
    frameworks.load(name)
    recipe = get_recipe("digits", **({"epochs": epochs} if epochs else {}))
    start = time.perf_counter()
    state = fit(name, recipe, out=out, seed=seed)
    return {"framework": name, "arch": state["arch"], "epochs": state["epoch"],
            "test_accuracy": state["history"][-1]["test_accuracy"], "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=frameworks.installed())
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="checkpoint folder (default: a temporary one)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.frameworks:
            rows.append(measure(frameworks.canonical_name(name), epochs=args.epochs, seed=args.seed,
                                out=f"{args.out or tmp}/{frameworks.canonical_name(name)}"))
    print(f"{'framework':<10} {'arch':<9} {'epochs':>6} {'test acc':>9} {'time':>8}")
    for r in rows:
        print(f"{frameworks.LABELS[r['framework']]:<10} {r['arch']:<9} {r['epochs']:>6} "
              f"{100 * r['test_accuracy']:>8.1f}% {r['seconds']:>7.1f}s")
    return 0 if all(r["test_accuracy"] >= TARGET for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
