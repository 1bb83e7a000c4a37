"""The first Flax ResNet of a process: built to receive weights (``model_from_weights``: ``nnx.eval_shape`` and
filling), and, with --random, ``build_model``'s random initialisation after it.

    python benchmarks/flax_startup.py [ARCH] [--random]
"""

from __future__ import annotations

import sys
import time

start = time.perf_counter()
import jax_impl  # noqa: E402
from jax_impl.checkpoint import model_from_weights  # noqa: E402
from shared.spec import get_spec  # noqa: E402
from shared.weights import randomize  # noqa: E402

imported = time.perf_counter()
spec = get_spec(next((a for a in sys.argv[1:] if not a.startswith("--")), "resnet50"))
weights = randomize(spec, 0)
start_build = time.perf_counter()
model_from_weights(spec, weights)
built = time.perf_counter()
print(f"import {imported - start:.2f} s, first model_from_weights({spec.name}) {built - start_build:.2f} s")
if "--random" in sys.argv:
    start = time.perf_counter()
    jax_impl.build_model(spec)
    print(f"then build_model({spec.name}), random init: {time.perf_counter() - start:.2f} s")
