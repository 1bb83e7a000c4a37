"""Eval-mode parity matrix: every preset, every ordered pair of frameworks, float32 and float64; and a training step
of every preset (``compare --train-steps 1``), of the grouped and gated blocks and of the family's presets.

The rule of shared.parity (README, "Tolerances"), for the stem, every block, the pooled features and
the logits: in float32 each target within k times the source's own float32 error against the
source's float64 run, in float64 within the fixed float64 bound.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from helpers import random_images
from shared import frameworks
from shared.cli import main
from shared.cli.report import format_table
from shared.parity import check_tensors, compare, floor, rule_for, train_parity
from shared.parity.eval import eval_tensors
from shared.spec import get_spec, list_specs
from shared.weights import randomize

FRAMEWORKS = list(frameworks.FRAMEWORKS)
DIRECTIONS = list(itertools.permutations(FRAMEWORKS, 2))
MATRIX = [name for name in list_specs() if name != "resnet1202"]  # resnet1202: see test_variants
# The deeper members of a family repeat the blocks of its shallowest member, which runs in both dtypes by
# default; their own runs (4 minutes of the suite) are slow tests. Their counts are checked in test_spec.
DEEP = {"resnet34", "resnet101", "resnet152", "keras_resnet101", "keras_resnet152", "keras_resnet101v2",
        "keras_resnet152v2", "resnet32", "resnet44", "resnet56", "resnet110"}
# keras.applications' ResNet50 (v1: conv biases; v2: pre-activation) and resnet50 in the matrix repeat what small
# networks with their fields check in both dtypes by default (small_keras_v1, small_keras_v2, the bottleneck of
# small_seresnext; resnet50 whole runs in test_full_size_224), and d2l_resnet18 and seed_tf_cifar in float32 what
# resnet18 and resnet20 check there (their float64 runs check their mappings): their own runs are slow tests
WHOLE_SLOW = {("keras_resnet50", "float32"), ("keras_resnet50", "float64"), ("keras_resnet50v2", "float32"),
              ("keras_resnet50v2", "float64"), ("resnet50", "float64"), ("resnet50", "float32"),
              ("d2l_resnet18", "float32"), ("seed_tf_cifar", "float32")}
# Other libraries' presets, and torchvision's ResNeXt and Wide ResNets, run whole as slow tests. By default, small
# networks with each of their fields (deep stem, average-pool projection, stage-start shortcuts, no conv bias, the
# stem's bias, the Flax example's padding, groups, SE and ECA) run in every direction instead: tests/test_libraries.py
# and test_variants.py check the presets against the libraries.
LIBRARIES = {
    "resnet18d", "resnet34d", "resnet50d", "resnet101d", "resnet152d", "keras_hub_resnet18vd", "keras_hub_resnet34vd",
    "keras_hub_resnet50v2", "keras_hub_resnet101v2", "seed_torch_resnet50", "seed_torch_cifar",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "seresnet50",
    "seresnext50_32x4d", "ecaresnet50d", "ecaresnet50t",
}
# channel counts resnet20 already has, so JAX compiles few new initialisers
SMALL = dict(layers=(1, 1), widths=(16, 32), strides=(1, 2), stem_width=16, num_classes=10)
SMALL_VARIANTS = {
    "small_keras_hub_vd": get_spec("keras_hub_resnet18vd", **SMALL, stem_widths=(16, 16)),  # resnet18d's fields too
    "small_keras_hub_v2": get_spec("keras_hub_resnet50v2", **SMALL, block="basic"),
    "small_seed_torch": get_spec("seed_torch_cifar", **SMALL),
    "small_flax_example": get_spec("resnet18", **SMALL, padding="tf_same"),
    "small_keras_v1": get_spec("keras_resnet50", **SMALL),
    "small_keras_v2": get_spec("keras_resnet50v2", **SMALL),
    # a grouped 3x3 (4 groups of 4 channels, then of 8) and SE; ECA (kernels 3 and 5) on ResNet-D
    "small_seresnext": get_spec("seresnext50_32x4d", **SMALL, groups=4, width_per_group=16),
    "small_ecaresnet_d": get_spec("ecaresnet50d", **SMALL, stem_widths=(16, 16)),
}
CASES = [
    pytest.param(arch, dtype, marks=[pytest.mark.slow] if arch in LIBRARIES | DEEP or (arch, dtype) in WHOLE_SLOW else [])
    for arch in MATRIX for dtype in ("float32", "float64")
] + [pytest.param(spec, dtype, id=f"{name}-{dtype}") for name, spec in SMALL_VARIANTS.items() for dtype in ("float32", "float64")]


@functools.lru_cache(maxsize=2)
def matrix(arch: str, dtype: str, size: int | None = None) -> dict:
    """For each source: randomise it, export, import into the others, compare every stage and the round trip."""
    with frameworks.numerics(FRAMEWORKS, dtype):
        return _matrix(arch, dtype, size)


def _matrix(arch: str, dtype: str, size: int | None) -> dict:
    impls = {name: frameworks.load(name) for name in FRAMEWORKS}
    spec = get_spec(arch)
    models = {name: impl.build_model(spec, dtype=dtype) for name, impl in impls.items()}
    x = random_images(spec, size, dtype=dtype)
    rule = rule_for(dtype, "eval", None)
    results = {}
    for k, src in enumerate(FRAMEWORKS):
        impls[src].import_weights(models[src], randomize(spec, seed=100 + k, dtype=np.dtype(dtype)))
        weights = impls[src].export_weights(models[src])
        reference = impls[src].features(models[src], x)
        truth = None
        if dtype != "float64":  # the source in float64 on the same weights and inputs
            with impls[src].numerics("float64"):
                wide = {key: v.astype(np.float64) for key, v in weights.items()}
                truth = impls[src].features(frameworks.load_checkpoints(src).model_from_weights(spec, wide, "float64"),
                                            x.astype(np.float64))
        outs, roundtrips = {}, {}
        for dst in FRAMEWORKS:
            if dst == src:
                continue
            impls[dst].import_weights(models[dst], weights)
            outs[dst] = impls[dst].features(models[dst], x)
            back = impls[dst].export_weights(models[dst])
            # A -> B -> A: import B's export into A again and export once more
            impls[src].import_weights(models[src], back)
            again = impls[src].export_weights(models[src])
            roundtrips[dst] = all(
                again[key].dtype == weights[key].dtype and np.array_equal(again[key], weights[key]) for key in weights)
        tensors = eval_tensors(spec)
        sampled = None
        if truth is not None:  # the floor as compare takes it: the reference's runs with other rounding
            sampled = floor.judged(
                lambda more, count: floor.largest_errors(
                    floor.eval_runs(src, spec, weights, x, dtype, seed=[100 + k, more], count=count), truth),
                lambda found: {d: check_tensors(tensors, out, reference, truth, rule, found) for d, out in outs.items()},
                [])
        for dst, out in outs.items():
            results[src, dst] = {
                "checks": check_tensors(tensors, out, reference, truth, rule, sampled),
                "shapes": {key: (out[key].shape, reference[key].shape) for key in reference},
                "roundtrip": roundtrips[dst],
            }
    return results


@pytest.mark.parametrize("src,dst", DIRECTIONS, ids=[f"{a}-{b}" for a, b in DIRECTIONS])
@pytest.mark.parametrize("arch,dtype", CASES)
def test_eval_parity(arch, dtype, src, dst):
    result = matrix(arch, dtype)[src, dst]
    for stage, (got, want) in result["shapes"].items():
        assert got == want, f"{stage}: {got} != {want}"
    failed = [(c.name, f"{c.error:.1e} > {c.limit:.1e}") for c in result["checks"] if not c.passed]
    assert not failed, failed
    assert result["roundtrip"], "A -> B -> A is not bit-identical"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_full_size_224(arch):
    spec = get_spec(arch)
    x = random_images(spec, 224, batch=1)
    report = compare(arch, inputs=x, seed=7)
    assert report.inputs["shape"] == [1, 224, 224, 3]
    assert [c.name for c in report.results[0].checks] == eval_tensors(spec)
    for result in report.results:
        assert result.passed, format_table(report, per_layer=True)



# --------------------------------------------------------------------------- a training step

# the grouped conv with SE, and ECA on ResNet-D, from each framework to the other two. By default: the grouped conv
# with SE in six directions in float64, and both from PyTorch in float32 (a Keras or Flax reference also runs the
# floor samples, four more runs of it); the rest with -m slow.
TRAINING = [
    pytest.param(name, dtype, source, marks=[] if (source == "torch" if dtype == "float32" else name == "small_seresnext")
                 else [pytest.mark.slow])
    for name in ("small_seresnext", "small_ecaresnet_d") for dtype in ("float32", "float64") for source in FRAMEWORKS
]


@pytest.mark.parametrize("name,dtype,source", TRAINING)
def test_training_step_of_grouped_and_gated_blocks(name, dtype, source):
    """One SGD step: the grouped conv's and the gates' gradients, parameters and BN statistics; 32x32, batch 4, so the
    last stage's BNs average 64 values per channel."""
    report = train_parity(SMALL_VARIANTS[name], steps=1, source=source, dtype=dtype, size=32, batch=4)
    assert report.passed, format_table(report, per_layer=True)


FAMILY = ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "seresnet50",
          "seresnext50_32x4d", "ecaresnet50d", "ecaresnet50t"]


@pytest.mark.slow
@pytest.mark.parametrize("source", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", FAMILY)
def test_training_step_of_every_family_preset(arch, dtype, source):
    """The presets themselves, one SGD step from each framework to the other two, at train_parity's defaults (64x64,
    batch 8: the last stage's BNs average 32 values per channel)."""
    report = train_parity(arch, steps=1, source=source, dtype=dtype)
    assert report.passed, format_table(report, per_layer=True)


# ``compare --arch NAME --train-steps 1 --size 32`` on every preset (issue 18, Deliver 6): PyTorch's weights and steps
# against Keras and Flax, float32 on the floor rule, batch 8 (the command's default: the last stage of an ImageNet
# network is 1x1 at 32x32, so its BNs average 8 values per channel). By default resnet18d, whose run crashed, and the
# TF seed's network (no BN at all); every preset's BN sample counts are checked against its BNs in test_spec.py, and
# the fields of the others run small above and in test_training_parity.py. Each deeper preset takes a minute or more to
# trace and compile: slow tests.
DEFAULT_TRAINING = {"resnet18d", "seed_tf_cifar"}
# An honest port the float32 rule still fails (issue 18): in seed_torch_cifar (an ImageNet stem at 32x32) Flax's
# gradients of conv1 and of layer1's first blocks are 1.4e-2 from the truth at seed 0, 11 times the floor of 16 samples
# (1.2e-3), where PyTorch and Keras are at 4e-6; in float64 Flax agrees with the truth to 2e-14. The errors come in
# steps (PyTorch and Flax from weights and inputs rounded otherwise: 4e-6, 1.2e-3 or 1.4e-2, nothing between): an
# element within rounding of a kink (a ReLU, or the stem max-pool's choice) that Flax's rounding flips and no floor
# sample of PyTorch's does. Samples of weights and inputs do not reach it; see docs/parity_floors.md.
ROUNDING_FAILS = {"seed_torch_cifar"}


def sweep_marks(arch: str) -> list:
    marks = [] if arch in DEFAULT_TRAINING else [pytest.mark.slow]
    if arch in ROUNDING_FAILS:
        marks.append(pytest.mark.xfail(strict=True, reason="a kink Flax's float32 rounding flips and no floor sample "
                                                           "does (issue 18)"))
    return marks


@pytest.mark.parametrize("arch", [pytest.param(a, marks=sweep_marks(a)) for a in list_specs()])
def test_a_training_step_of_every_preset(capsys, arch):
    """resnet18d's run ended in KeyError 'conv1.1' (BN sample counts that knew no deep stem): every preset's geometry
    (deep stems, pooled shortcuts, pre-activation, groups, gates) through the whole training check."""
    code = main(["compare", "--arch", arch, "--train-steps", "1", "--size", "32"])
    out, err = capsys.readouterr()
    assert code == 0 and "all frameworks agree" in out, err + out
