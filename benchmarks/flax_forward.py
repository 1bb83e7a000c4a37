"""The compiled eval forward alone, ours (``jax_impl.train._forward``, tree mode) against the Flax ImageNet
example's ``jax.jit`` of ``apply`` (``jax_impl.references``), on the same device array, interleaved in one process: what is left of
``resnet-parity bench``'s eval ratio once input conversion and the fetch of the logits are taken out.

    python benchmarks/flax_forward.py resnet20 128 32 25
    python benchmarks/flax_forward.py resnet18 16 224 25

Arguments: preset, batch, size, rounds. Printed: the median and fastest milliseconds per call of each.
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import jax_impl
from jax_impl import train
from jax_impl import references
from shared.spec import get_spec


def main() -> None:
    arch, batch, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    spec = get_spec(arch)
    (label, build), *_ = references.references(spec, size)[0]
    reference = build()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, size, size, spec.in_channels)).astype(np.float32))
    variables = jax.jit(partial(reference.init, train=False))(jax.random.PRNGKey(0), x[:1])
    apply = jax.jit(partial(reference.apply, train=False))
    model = jax_impl.build_model(spec)
    model.eval(graph=False)
    calls = {label: lambda: apply(variables, x).block_until_ready(),
             "ours": lambda: train._forward(model, x).block_until_ready()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # compile
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name}: median {statistics.median(t) * 1e3:.1f} ms, fastest {min(t) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
