"""keras.applications ResNets <-> canonical weights: random keras.applications models give our logits.

Expected numbers come from outside the code under test: keras.applications' published parameter
counts (Keras counts BN moving statistics as weights) and the logits of keras.applications' own models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from shared import frameworks
from shared.parity import FIXED_FLOAT32
from shared.spec import get_spec
from shared.weights import WeightMismatchError, count_parameters, relative_error

torch_impl, tf_impl, jax_impl = (frameworks.load(name) for name in ("torch", "tf", "jax"))

import keras  # noqa: E402  (after tensorflow_impl has chosen the backend)

from tensorflow_impl import from_keras_applications, to_keras_applications  # noqa: E402
from tensorflow_impl.keras_applications import (  # noqa: E402
    BLOCK_NAMES, check_model, infer_spec, keras_applications_names,
)

TOLERANCE = FIXED_FLOAT32  # against another library's float32 model: no float64 run of it to take a floor from
SIZE = 64
# keras.applications constructor of each preset
CONSTRUCTORS = {
    "keras_resnet50": keras.applications.ResNet50,
    "keras_resnet101": keras.applications.ResNet101,
    "keras_resnet152": keras.applications.ResNet152,
    "keras_resnet50v2": keras.applications.ResNet50V2,
    "keras_resnet101v2": keras.applications.ResNet101V2,
    "keras_resnet152v2": keras.applications.ResNet152V2,
}
# keras.applications' documented sizes: weights as Keras counts them, moving statistics included
KERAS_COUNTS = {
    "keras_resnet50": 25_636_712,
    "keras_resnet101": 44_707_176,
    "keras_resnet152": 60_419_944,
    "keras_resnet50v2": 25_613_800,
}


def build_kapp(preset: str, size: int = SIZE) -> keras.Model:
    return CONSTRUCTORS[preset](weights=None, classifier_activation=None, input_shape=(size, size, 3))


def randomize_keras(model: keras.Model, seed: int) -> None:
    """Every variable random at a realistic scale, BN statistics and biases included (fresh init hides swaps)."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape = tuple(var.shape)
        if var.name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif var.name == "kernel":
            value = rng.normal(0.0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        var.assign(value.astype(var.dtype))


@dataclass
class Reference:
    preset: str
    model: keras.Model
    x: np.ndarray
    logits: np.ndarray


@pytest.fixture(scope="module", params=["keras_resnet50", "keras_resnet50v2"])
def ref(request) -> Reference:
    model = build_kapp(request.param)
    randomize_keras(model, seed=1)
    x = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    return Reference(request.param, model, x, model(x, training=False).numpy())


def ported_logits(impl, spec, weights: dict, x: np.ndarray) -> np.ndarray:
    model = impl.build_model(spec)
    impl.import_weights(model, weights)
    return impl.features(model, x)["fc"]


@pytest.mark.parametrize("framework", ["torch", "tf", "jax"])
def test_ported_model_gives_keras_applications_logits(ref: Reference, framework: str):
    weights = from_keras_applications(ref.model)
    err = relative_error(ported_logits(frameworks.load(framework), ref.preset, weights, ref.x), ref.logits)
    assert err <= TOLERANCE, f"{ref.preset} -> {framework}: relative error {err:.2e}"


def test_preset_is_inferred_from_the_layers(ref: Reference):
    assert infer_spec(ref.model) == get_spec(ref.preset)


def test_round_trip_through_torch_is_bit_exact(ref: Reference):
    model = torch_impl.build_model(ref.preset)
    torch_impl.import_weights(model, from_keras_applications(ref.model))
    fresh = build_kapp(ref.preset)
    to_keras_applications(torch_impl.export_weights(model), fresh)
    assert [v.path for v in fresh.weights] == [v.path for v in ref.model.weights]
    for got, want in zip(fresh.weights, ref.model.weights):
        assert np.array_equal(got.numpy(), want.numpy()), got.path
    assert np.array_equal(fresh(ref.x, training=False).numpy(), ref.logits)


def test_parameter_count(ref: Reference):
    assert ref.model.count_params() == KERAS_COUNTS[ref.preset]
    assert sum(count_parameters(get_spec(ref.preset))) == KERAS_COUNTS[ref.preset]


@pytest.mark.parametrize("preset", ["keras_resnet101", "keras_resnet152", "keras_resnet101v2", "keras_resnet152v2"])
def test_deep_presets_name_every_layer(preset: str):
    model = build_kapp(preset, size=32)  # the smallest input keras.applications accepts
    spec = get_spec(preset)
    assert infer_spec(model) == spec
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert set(keras_applications_names(spec).values()) == weighted
    check_model(spec, model)  # every variable present with the shape the spec implies
    assert model.count_params() == sum(count_parameters(spec))
    if preset in KERAS_COUNTS:
        assert model.count_params() == KERAS_COUNTS[preset]


@pytest.fixture(scope="module")
def v1_model() -> keras.Model:
    model = build_kapp("keras_resnet50")
    randomize_keras(model, seed=3)
    return model


def test_torchvision_spec_lists_every_conv_bias(v1_model: keras.Model):
    with pytest.raises(WeightMismatchError) as info:
        from_keras_applications(v1_model, spec="resnet50")
    # torchvision's convs have no bias: 1 stem + 16 blocks x 3 + 4 projections = 53 convs
    conv_biases = {f"{layer.name}/bias" for layer in v1_model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert len(conv_biases) == 53
    assert set(info.value.unexpected) == conv_biases
    assert not info.value.missing and not info.value.mismatched


def test_v2_spec_on_v1_model_lists_both_sides(v1_model: keras.Model):
    with pytest.raises(WeightMismatchError) as info:
        from_keras_applications(v1_model, spec="keras_resnet50v2")
    err = info.value
    missing = {"post_bn/gamma (post_bn.weight)", "conv2_block1_preact_bn/moving_variance (layer1.0.bn1.running_var)"}
    assert missing <= set(err.missing)
    assert {"conv1_bn/gamma", "conv2_block1_3_bn/beta", "conv2_block1_0_bn/moving_mean"} <= set(err.unexpected)
    assert "post_bn/gamma" in str(err) and "conv1_bn/gamma" in str(err)


def test_bad_weights_list_every_problem_and_change_nothing(v1_model: keras.Model):
    weights = from_keras_applications(v1_model)
    before = [v.numpy() for v in v1_model.weights]
    del weights["fc.bias"]
    weights["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    weights["layer1.0.bn2.running_var"] = np.ones((65,), np.float32)
    with pytest.raises(WeightMismatchError) as info:
        to_keras_applications(weights, v1_model)
    assert info.value.missing == ["fc.bias"]
    assert info.value.unexpected == ["layer9.0.conv1.weight"]
    assert info.value.mismatched == [("layer1.0.bn2.running_var", (65,), (64,))]
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(v1_model.weights, before))


def test_model_of_no_preset_is_refused():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="predictions")])
    with pytest.raises(ValueError, match="no preset"):
        from_keras_applications(other)


# two BNs of equal width inside every block, swapped in the name table
SWAPS = {"keras_resnet50": ("v1", "bn1", "bn2"), "keras_resnet50v2": ("v2", "bn2", "bn3")}


def test_swapped_layers_are_noticed(ref: Reference, monkeypatch):
    variant, a, b = SWAPS[ref.preset]
    swapped = {**BLOCK_NAMES[variant], a: BLOCK_NAMES[variant][b], b: BLOCK_NAMES[variant][a]}
    monkeypatch.setitem(BLOCK_NAMES, variant, swapped)
    # same shapes, so the strict checks pass: only the logits can tell
    weights = from_keras_applications(ref.model)
    assert relative_error(ported_logits(torch_impl, ref.preset, weights, ref.x), ref.logits) > 1e-2


def test_stride_on_the_3x3_is_noticed(v1_model: keras.Model):
    x = np.random.default_rng(4).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    v15 = get_spec("keras_resnet50", stride_on="3x3")  # torchvision's v1.5 placement, same weights
    weights = from_keras_applications(v1_model, spec=v15)
    expected = v1_model(x, training=False).numpy()
    assert relative_error(ported_logits(torch_impl, "keras_resnet50", weights, x), expected) <= TOLERANCE
    assert relative_error(ported_logits(torch_impl, v15, weights, x), expected) > 1e-2


@pytest.mark.slow  # four ResNet50V2 builds and two verified conversions: a minute on 2 cores
def test_include_top_false_is_a_headless_backbone_both_ways(tmp_path):
    """keras.applications' include_top=False (pooling='avg'), its usual backbone, reads as num_classes=0: its pooled
    features are ours in every framework, and it is written back as include_top=False weights it loads."""
    from shared import checkpoint
    from shared.convert import convert

    theirs = keras.applications.ResNet50V2(weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(5)
    for layer in theirs.layers:  # fresh statistics (0, 1) hide swaps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0.0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    theirs.save_weights(tmp_path / "notop.weights.h5")
    x = rng.standard_normal((2, SIZE, SIZE, 3)).astype(np.float32)
    truth = theirs(x).numpy()
    report = convert(tmp_path / "notop.weights.h5", tmp_path / "notop.pt")
    assert report["passed"] and report["architecture"] == "keras_resnet50v2 with num_classes=0"
    for name, impl in zip(("torch", "tf", "jax"), (torch_impl, tf_impl, jax_impl)):
        features = impl.features(checkpoint.load_model(name, tmp_path / "notop.pt"), x)["flatten"]
        assert relative_error(features, truth) <= TOLERANCE, name
    assert convert(tmp_path / "notop.pt", tmp_path / "back.weights.h5", dst_format="keras-app")["passed"]
    back = keras.applications.ResNet50V2(weights=str(tmp_path / "back.weights.h5"), include_top=False, pooling="avg",
                                         input_shape=(SIZE, SIZE, 3))
    assert np.array_equal(back(x).numpy(), truth)
