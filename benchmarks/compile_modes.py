"""Which mode is fastest here: our model plain against our model under ``resnet-parity bench --compile``'s
wrapping (``torch.compile``; Keras ``jit_compile=True``), interleaved in one process by ``shared.bench``.

    python benchmarks/compile_modes.py torch resnet50 16 224 eval 5
    python benchmarks/compile_modes.py tf resnet20 128 32 both 5

Arguments: framework (torch or tf; JAX has one mode, jitted), preset, batch, size, mode (eval, train,
both), rounds. The ratio printed is plain over compiled (> 1: plain is faster).
"""

from __future__ import annotations

import sys

from shared import bench, frameworks
from shared.cli.bench import format_table


def main() -> None:
    fw, arch, batch, size, mode, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
    module, refs, impl = frameworks.load_bench(fw), frameworks.load_references(fw), frameworks.load(fw)
    # the compiled model takes the reference's place: the same step, with --compile's wrapping
    refs.references = lambda spec, size: ([("ours, compiled", lambda: impl.build_model(spec))], [])
    refs.reference_step = lambda build, spec, mode, x, y, recipe, *, compile: module.step(build(), mode, x, y, recipe, True)
    print(format_table(bench.bench(arch, targets=[fw], batch=batch, size=size, mode=mode, repeats=repeats)))


if __name__ == "__main__":
    main()
