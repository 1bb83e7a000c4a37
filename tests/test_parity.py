"""Eval-mode parity matrix: every preset, every ordered pair of frameworks, float32 and float64.

Bound (README, "Tolerances"): relative error max|a-b| / max|b| <= 1e-5 in float32 and
<= 1e-12 in float64, for the stem, every stage and the logits.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from shared import frameworks
from shared.parity import TOLERANCE
from shared.spec import get_spec, list_specs
from shared.weights import randomize, relative_error

FRAMEWORKS = list(frameworks.FRAMEWORKS)
DIRECTIONS = list(itertools.permutations(FRAMEWORKS, 2))
MATRIX = [name for name in list_specs() if name != "resnet1202"]  # resnet1202: see test_variants
# The deeper members of a family repeat its resnet50's blocks, which run in float64 by default; the deep ones'
# float64 runs (2 minutes of the suite) are slow tests.
DEEP = {"resnet101", "resnet152", "keras_resnet101", "keras_resnet152", "keras_resnet101v2", "keras_resnet152v2"}
CASES = [
    pytest.param(arch, dtype, marks=[pytest.mark.slow] if dtype == "float64" and arch in DEEP else [])
    for arch in MATRIX for dtype in ("float32", "float64")
]


def small_input(spec, dtype, size=None, batch=2, seed=0):
    size = size or (64 if spec.image_size > 64 else spec.image_size)
    return np.random.default_rng(seed).standard_normal((batch, size, size, spec.in_channels)).astype(dtype)


@functools.lru_cache(maxsize=2)
def matrix(arch: str, dtype: str, size: int | None = None) -> dict:
    """For each source: randomise it, export, import into the others, compare every stage and the round trip."""
    with frameworks.numerics(FRAMEWORKS, dtype):
        return _matrix(arch, dtype, size)


def _matrix(arch: str, dtype: str, size: int | None) -> dict:
    impls = {name: frameworks.load(name) for name in FRAMEWORKS}
    spec = get_spec(arch)
    models = {name: impl.build_model(spec, dtype=dtype) for name, impl in impls.items()}
    x = small_input(spec, dtype, size)
    results = {}
    for k, src in enumerate(FRAMEWORKS):
        impls[src].import_weights(models[src], randomize(spec, seed=100 + k, dtype=np.dtype(dtype)))
        weights = impls[src].export_weights(models[src])
        reference = impls[src].features(models[src], x)
        for dst in FRAMEWORKS:
            if dst == src:
                continue
            impls[dst].import_weights(models[dst], weights)
            out = impls[dst].features(models[dst], x)
            back = impls[dst].export_weights(models[dst])
            # A -> B -> A: import B's export into A again and export once more
            impls[src].import_weights(models[src], back)
            again = impls[src].export_weights(models[src])
            results[src, dst] = {
                "errors": {k: relative_error(out[k], reference[k]) for k in reference},
                "shapes": {k: (out[k].shape, reference[k].shape) for k in reference},
                "roundtrip": all(
                    again[key].dtype == weights[key].dtype and np.array_equal(again[key], weights[key]) for key in weights
                ),
            }
    return results


@pytest.mark.parametrize("src,dst", DIRECTIONS, ids=[f"{a}-{b}" for a, b in DIRECTIONS])
@pytest.mark.parametrize("arch,dtype", CASES)
def test_eval_parity(arch, dtype, src, dst):
    result = matrix(arch, dtype)[src, dst]
    for stage, (got, want) in result["shapes"].items():
        assert got == want, f"{stage}: {got} != {want}"
    worst = max(result["errors"].values())
    assert worst <= TOLERANCE[dtype], result["errors"]
    assert result["roundtrip"], "A -> B -> A is not bit-identical"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_full_size_224(impls, arch):
    spec = get_spec(arch)
    x = small_input(spec, "float32", size=224, batch=1)
    weights = randomize(spec, seed=7)
    outs = {}
    for name, impl in impls.items():
        model = impl.build_model(spec)
        impl.import_weights(model, weights)
        outs[name] = impl.features(model, x)
    assert outs["torch"][spec.blocks()[-1].prefix].shape == (1, 7, 7, spec.final_width)
    for name in ("tf", "jax"):
        for stage in outs["torch"]:
            assert relative_error(outs[name][stage], outs["torch"][stage]) <= TOLERANCE["float32"], (name, stage)
