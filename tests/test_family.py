"""The wider family's own pieces: Keras's grouped convolution wherever a user runs it (eager, tf.function, XLA, a
.keras file), grouped and gated weights through every native format (every preset at full size, ONNX too, with
-m slow), and deliberate mistakes in the grouped conv and the SE/ECA gates that the parity check must catch.

Numbers come from outside the code under test: PyTorch's grouped ``F.conv2d`` in float64 is the truth for the Keras
layer (float32: the rule of ``shared.parity``, with PyTorch's float32 error as the floor).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared import checkpoint, frameworks
from shared.cli.report import format_table
from shared.convert import convert
from shared.parity import FIXED_FLOAT32, check_tensors, compare, rule_for
from shared.spec import PRESETS, get_spec
from shared.weights import OIHW_TO_HWIO, from_canonical, randomize, relative_error

tf_impl = frameworks.load("tf")

import tensorflow as tf  # noqa: E402  (after tensorflow_impl has quietened TensorFlow)

from tensorflow_impl.resnet import Conv2d  # noqa: E402

SMALL = dict(layers=(1, 1), widths=(16, 32), strides=(1, 2), stem_width=16, num_classes=10)
RESNEXT = get_spec("resnext50_32x4d", **SMALL, groups=4, width_per_group=16)
SERESNEXT = get_spec("seresnext50_32x4d", **SMALL, groups=4, width_per_group=16)
ECARESNET_D = get_spec("ecaresnet50d", **SMALL, stem_widths=(16, 16))
GROUPS, STRIDE = 4, 2


def torch_grouped(x: np.ndarray, kernel: np.ndarray, ct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's grouped conv (symmetric padding 1): the output NHWC, and the gradients of sum(output * ct) with
    respect to the kernel (OIHW) and the input (NHWC)."""
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    kt = torch.tensor(kernel, requires_grad=True)
    y = F.conv2d(xt, kt, stride=STRIDE, padding=1, groups=GROUPS)
    (y * torch.tensor(ct.transpose(0, 3, 1, 2))).sum().backward()
    return y.detach().numpy().transpose(0, 2, 3, 1), kt.grad.numpy(), xt.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_grouped_conv_in_eager_tf_function_and_xla(dtype):
    """tensorflow_impl's Conv2d with groups (the layer build_model's ResNeXts hold): output and both gradients in eager
    mode, under tf.function and under XLA, against PyTorch's grouped conv. TensorFlow's own CPU kernel has no grouped
    gradient in float64; an odd input makes the stride-2 padding matter."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 9, 16))
    kernel = rng.standard_normal((32, 16 // GROUPS, 3, 3)) / 6
    ct = rng.standard_normal((2, 5, 5, 32))
    truth = torch_grouped(x, kernel, ct)
    source = torch_grouped(*(a.astype(dtype) for a in (x, kernel, ct)))
    layer = Conv2d(32, 3, STRIDE, pad="symmetric", groups=GROUPS, use_bias=False, dtype=dtype)
    layer.build((None, None, None, 16))
    layer.kernel.assign(from_canonical(kernel.astype(dtype), OIHW_TO_HWIO))

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.constant(ct, dtype))
        dk, dx = tape.gradient(loss, [layer.kernel, x])
        return y, dk, dx

    rule = rule_for(dtype, "eval", None)
    names = ["output", "kernel gradient", "input gradient"]
    for mode, run in {"eager": step, "tf.function": tf.function(step), "XLA": tf.function(step, jit_compile=True)}.items():
        y, dk, dx = (t.numpy() for t in run(tf.constant(x, dtype)))
        got = dict(zip(names, (y, np.transpose(dk, np.argsort(OIHW_TO_HWIO)), dx)))
        checks = check_tensors(names, got, dict(zip(names, source)), dict(zip(names, truth)), rule)
        assert all(c.passed for c in checks), (mode, [(c.name, c.error, c.limit) for c in checks])


def test_keras_model_with_grouped_convs_in_eager_tf_function_and_xla():
    """build_model's Keras ResNeXt with SE, in float64: its logits in each mode within 1e-12 of PyTorch's."""
    weights = {k: v.astype(np.float64) for k, v in randomize(SERESNEXT, seed=4).items()}
    x = np.random.default_rng(5).standard_normal((2, 32, 32, 3))
    torch_impl = frameworks.load("torch")
    with torch_impl.numerics("float64"):
        truth = torch_impl.features(frameworks.load_checkpoints("torch").model_from_weights(SERESNEXT, weights, "float64"), x)
    with tf_impl.numerics("float64"):
        model = tf_impl.build_model(SERESNEXT, dtype="float64")
        tf_impl.import_weights(model, weights)
        batch = tf.constant(x)
        forward = lambda b: model(b, training=False)  # noqa: E731
        for mode, run in {"eager": forward, "tf.function": tf.function(forward),
                          "XLA": tf.function(forward, jit_compile=True)}.items():
            (check,) = check_tensors(["fc"], {"fc": run(batch).numpy()}, truth, None, rule_for("float64", "eval", None))
            assert check.passed, (mode, check)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("spec", [RESNEXT, SERESNEXT, ECARESNET_D], ids=["resnext", "seresnext", "ecaresnet-d"])
@pytest.mark.parametrize("name", ["w.pt", "w.safetensors", "w.keras", "w.weights.h5", "w_orbax", "w.msgpack"])
def test_family_weights_round_trip_through_every_native_format(tmp_path, name, spec):
    """Grouped convs', SE's and ECA's weights, written and read back bit for bit (the formats with no record read with
    the spec: no weight shape tells v1.5's stride placement from v1's, and a custom network is no preset)."""
    weights = randomize(spec, seed=7)
    checkpoint.save(tmp_path / name, weights, spec)
    source = checkpoint.Source.open(tmp_path / name).read(spec)
    assert source.spec == spec
    for key, value in weights.items():
        assert source.weights[key].dtype == value.dtype and np.array_equal(source.weights[key], value), key


def test_a_keras_file_of_grouped_convs_loads_with_keras(tmp_path):
    """keras.saving.load_model rebuilds Keras's own grouped Conv2D from the .keras file we write, and it computes what
    ours does (one conv per group) to float32 rounding."""
    import keras

    weights = randomize(RESNEXT, seed=7)
    checkpoint.save(tmp_path / "w.keras", weights, RESNEXT)
    loaded = keras.saving.load_model(tmp_path / "w.keras")
    ours = tf_impl.build_model(RESNEXT)
    tf_impl.import_weights(ours, weights)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    conv2 = loaded.get_layer("layer1.0.conv2")
    assert type(conv2) is keras.layers.Conv2D and conv2.groups == 4
    assert relative_error(loaded(x).numpy(), ours(x).numpy()) <= FIXED_FLOAT32


# ----------------------------------------------------------------------------- deliberate mistakes


def interleaved_groups(weights: dict) -> dict:
    """Each grouped conv's output channels dealt to the groups in turn (channel o to group o % g) instead of in blocks
    (o // (out / g), as PyTorch, Keras and Flax all take them)."""
    out = dict(weights)
    for block in SERESNEXT.blocks():
        conv = block.convs[1]
        key, g = f"{conv.path}.weight", conv.groups
        w = out[key]
        out[key] = w.reshape(g, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
    return out


def flipped_eca_kernels(weights: dict) -> dict:
    """ECA's 1-D kernel reversed: a convolution where PyTorch, Keras and Flax all cross-correlate."""
    return {k: v[..., ::-1].copy() if k.endswith(".se.conv.weight") else v for k, v in weights.items()}


def dropped_se_biases(weights: dict) -> dict:
    """SE's biases zeroed, as a port reading conv_bias='unnormalized' for the gate's convs would leave them."""
    return {k: np.zeros_like(v) if k.endswith((".se.fc1.bias", ".se.fc2.bias")) else v for k, v in weights.items()}


@pytest.mark.parametrize("spec,mistake", [
    (SERESNEXT, interleaved_groups), (ECARESNET_D, flipped_eca_kernels), (SERESNEXT, dropped_se_biases),
], ids=["interleaved-groups", "flipped-eca-kernel", "dropped-se-bias"])
def test_grouped_and_gated_mistakes_are_caught(spec, mistake):
    """Each mistake in the ported weights fails in both dtypes; the correct port passes."""
    def wrong(name):
        def build(spec, weights, dtype):
            return frameworks.load_checkpoints(name).model_from_weights(spec, mistake(weights), dtype)
        return build

    for dtype in ("float32", "float64"):
        right = compare(spec, dtype=dtype, size=32, seed=3)
        assert right.passed, format_table(right)
        report = compare(spec, dtype=dtype, size=32, seed=3, models={"tf": wrong("tf"), "jax": wrong("jax")})
        assert not any(r.passed for r in report.results if not r.reference), format_table(report)


# ----------------------------------------------------------------------------- every preset at full size

FAMILY = [name for name, s in PRESETS.items() if (s.groups, s.width_per_group, s.attention) != (1, 64, "none")]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY)
def test_every_family_preset_round_trips_through_every_format(tmp_path, name):
    """Each preset at full size, bit for bit through the six native formats, its architecture recorded or inferred
    from the weights; and as ONNX, which convert verifies in onnxruntime. (timm's format: test_libraries.py.)"""
    spec = get_spec(name)
    weights = randomize(spec, seed=7)
    for file in ("w.pt", "w.safetensors", "w.keras", "w.weights.h5", "w_orbax", "w.msgpack"):
        checkpoint.save(tmp_path / file, weights, spec)
        source = checkpoint.Source.open(tmp_path / file).read()
        assert source.spec == spec, (file, source.notes)
        for key, value in weights.items():
            assert source.weights[key].dtype == value.dtype and np.array_equal(source.weights[key], value), (file, key)
        shutil.rmtree(tmp_path / file) if (tmp_path / file).is_dir() else (tmp_path / file).unlink()
    checkpoint.save(tmp_path / "w.safetensors", weights, spec)
    report = convert(tmp_path / "w.safetensors", tmp_path / "w.onnx")
    assert report["verification"]["passed"] and report["verification"]["frameworks"] == ["torch", "onnxruntime"], report
