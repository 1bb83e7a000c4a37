"""A parity check is only worth something if a wrong port fails it: each test breaks one thing on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from shared.parity import TOLERANCE
from shared.spec import get_spec
from shared.weights import WeightMismatchError, randomize, relative_error

TOL = TOLERANCE["float32"]


def logits_error(impls, arch, target, *, target_spec=None, x_size=64):
    """Relative error of ``target``'s logits against torch's after porting random torch weights."""
    spec = get_spec(arch)
    weights = randomize(spec, seed=3)
    x = np.random.default_rng(1).standard_normal((2, x_size, x_size, spec.in_channels)).astype(np.float32)
    torch_model = impls["torch"].build_model(spec)
    impls["torch"].import_weights(torch_model, weights)
    model = impls[target].build_model(target_spec or spec)
    impls[target].import_weights(model, weights)
    return relative_error(impls[target].features(model, x)["fc"], impls["torch"].features(torch_model, x)["fc"])


@pytest.mark.parametrize("target", ["tf", "jax"])
def test_correct_port_passes(impls, target):
    assert logits_error(impls, "resnet18", target) <= TOL


@pytest.mark.parametrize("target", ["tf", "jax"])
def test_tf_same_padding_at_stride_2_is_caught(impls, target):
    wrong = get_spec("resnet18", padding="tf_same")
    assert logits_error(impls, "resnet18", target, target_spec=wrong) > 1e-2


@pytest.mark.parametrize("target", ["tf", "jax"])
def test_keras_default_bn_epsilon_is_caught(impls, target):
    wrong = get_spec("resnet18", bn_eps=1e-3)
    assert logits_error(impls, "resnet18", target, target_spec=wrong) > 10 * TOL


@pytest.mark.parametrize("target", ["tf", "jax"])
def test_stride_on_the_1x1_instead_of_the_3x3_is_caught(impls, target):
    # v1 (Keras applications) vs v1.5 (torchvision): same weights, different network
    wrong = get_spec("resnet50", stride_on="1x1")
    assert logits_error(impls, "resnet50", target, target_spec=wrong) > 1e-2


@pytest.mark.parametrize("target,module", [("tf", "tensorflow_impl.weights"), ("jax", "jax_impl.weights")])
def test_missing_kernel_transpose_is_caught(impls, monkeypatch, target, module):
    import importlib

    table = importlib.import_module(module).PARAMS
    # OIHW -> WHIO instead of HWIO: shapes still fit (square kernels), values land wrong
    monkeypatch.setitem(table, "conv", {**table["conv"], "weight": (table["conv"]["weight"][0], (3, 2, 1, 0))})
    assert logits_error(impls, "resnet18", target) > 1e-2


@pytest.mark.parametrize("target", ["tf", "jax"])
def test_swapped_bn_tensors_are_caught(impls, target):
    # a port that reads gamma where the running variance is (both positive, same shape)
    spec = get_spec("resnet18")
    weights = randomize(spec, seed=3)
    swapped = dict(weights)
    swapped["layer1.0.bn1.weight"], swapped["layer1.0.bn1.running_var"] = (
        weights["layer1.0.bn1.running_var"], weights["layer1.0.bn1.weight"])
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype(np.float32)
    ref = impls["torch"].build_model(spec)
    impls["torch"].import_weights(ref, weights)
    model = impls[target].build_model(spec)
    impls[target].import_weights(model, swapped)
    assert relative_error(impls[target].features(model, x)["fc"], impls["torch"].features(ref, x)["fc"]) > 1e-3


@pytest.mark.parametrize("fw", ["torch", "tf", "jax"])
def test_import_is_strict_and_reports_every_problem(impls, fw):
    spec = get_spec("resnet18")
    weights = randomize(spec)
    del weights["fc.bias"]
    weights["layer9.0.conv1.weight"] = np.zeros(3, np.float32)
    weights["conv1.weight"] = np.zeros((64, 3, 3, 3), np.float32)
    model = impls[fw].build_model(spec)
    with pytest.raises(WeightMismatchError) as info:
        impls[fw].import_weights(model, weights)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.missing == ["fc.bias"]
    assert err.unexpected == ["layer9.0.conv1.weight"]
    assert err.mismatched == [("conv1.weight", (64, 3, 3, 3), (64, 3, 7, 7))]
    for text in ("fc.bias", "layer9.0.conv1.weight", "conv1.weight"):
        assert text in str(err)
