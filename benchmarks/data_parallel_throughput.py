"""img/s of the data-parallel training step, per framework, on 1 and 2 replicas of its own engine.

    python benchmarks/data_parallel_throughput.py [--rounds 2] [--frameworks torch tf jax]

resnet20, float32, 32x32, global batch 64: 3 warm-up steps, then the median (and the range) over 12
steps of ``DataParallel.train_step``, each configuration in a fresh process started by
``shared.parallel.run``. The rounds interleave the configurations, so load from elsewhere spreads over
all of them. ``torch-1thread`` runs PyTorch's replicas with one intra-op thread each (what torchrun's
OMP_NUM_THREADS=1 gives): on a loaded 2-core machine 2 threads for 1 replica oversubscribe it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from shared import parallel
from shared.spec import get_spec
from shared.parity import PARITY_RECIPE

WARMUP, STEPS, BATCH = 3, 12, 64


def throughput(engine, threads: int | None) -> tuple[float, float, float]:
    """(median, slowest, fastest) img/s of the engine's training step; runs in the replica processes."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    recipe = PARITY_RECIPE.replace(arch="resnet20", batch_size=BATCH)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((BATCH, 32, 32, 3)).astype("float32"), rng.integers(0, 10, BATCH)
    with engine.numerics("float32"):
        model = engine.build_model(get_spec("resnet20"))
        optimizer = engine.make_optimizer(model, recipe, WARMUP + STEPS)
        seconds = []
        for step in range(WARMUP + STEPS):
            start = time.perf_counter()
            engine.train_step(model, optimizer, x, y, recipe)
            seconds.append(time.perf_counter() - start)
    rates = BATCH / np.array(seconds[WARMUP:])
    return float(np.median(rates)), float(rates.min()), float(rates.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frameworks", nargs="+", default=["torch", "torch-1thread", "tf", "jax"])
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for label in args.frameworks:
            name, threads = ("torch", 1) if label == "torch-1thread" else (label, None)
            for devices, sync_bn in ((1, False), (2, False), (2, True)):
                median, low, high = parallel.run(name, throughput, threads, devices=devices, sync_bn=sync_bn)
                print(json.dumps({"round": round_, "framework": label, "devices": devices, "sync_bn": sync_bn,
                                  "img_s": round(median, 1), "min": round(low, 1), "max": round(high, 1)}), flush=True)


if __name__ == "__main__":
    main()
