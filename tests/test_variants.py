"""The variants (CIFAR, d2l, the TF seed, seed 001's PyTorch networks) against numbers and code from outside the
implementation.

Parameter counts come from He et al. 2016 (CIFAR table) and the seeds' networks; shapes from the
table the d2l seed prints; logits from the seeds' own networks, reproduced here as reference implementations.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from shared import checkpoint, frameworks
from shared.parity import FIXED_FLOAT32
from shared.spec import get_spec
from shared.summary import summary
from shared.weights import count_parameters, relative_error

from helpers import randomize_torch
from seed_torch_networks import SEED_TORCH, seed_torch_net

torch_impl, tf_impl, jax_impl = (frameworks.load(name) for name in ("torch", "tf", "jax"))

import keras  # noqa: E402  (after tensorflow_impl has chosen the backend)
from keras import layers, ops  # noqa: E402

TOLERANCE = FIXED_FLOAT32  # against another library's float32 model: no float64 run of it to take a floor from
# He et al. 2016, §4.2 table (0.27M ... 19.4M), to the unit for option A; BN statistics not counted
CIFAR_COUNTS = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
}
D2L_COUNT = 11_178_378  # the d2l seed's ResNet-18 (1 input channel, 10 classes), its own parameters()


def torch_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def keras_count(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def flax_count(model: nnx.Module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("preset", CIFAR_COUNTS)
def test_cifar_parameter_count(preset: str):
    params, _ = count_parameters(get_spec(preset))
    assert params == CIFAR_COUNTS[preset]
    assert torch_count(torch_impl.build_model(preset)) == CIFAR_COUNTS[preset]


@pytest.mark.parametrize("preset", ["resnet20", "d2l_resnet18"])
def test_counts_agree_in_every_framework(preset: str):
    expected = {**CIFAR_COUNTS, "d2l_resnet18": D2L_COUNT}[preset]
    assert count_parameters(get_spec(preset))[0] == expected
    assert torch_count(torch_impl.build_model(preset)) == expected
    assert keras_count(tf_impl.build_model(preset)) == expected
    assert flax_count(jax_impl.build_model(preset)) == expected


def test_resnet1202_runs():
    model = torch_impl.build_model("resnet1202")
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    # batch statistics, as in training: with fresh running statistics (mean 0, var 1) eval mode
    # sums 600 unnormalised residuals and overflows float32
    logits = torch_impl.features(model, x, training=True)["fc"]
    assert logits.shape == (1, 10) and np.all(np.isfinite(logits))


# ----------------------------------------------------------------------------- option A shortcut


def test_option_a_shortcut_pads_zeros_around_the_subsampled_input():
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 16)).astype(np.float32)
    # by hand: layer2.0 goes 16 -> 32 channels at stride 2; 8 zero channels on each side
    expected = np.zeros((2, 16, 16, 32), np.float32)
    expected[..., 8:24] = x[:, ::2, ::2, :]
    torch_model = torch_impl.build_model("resnet20")
    got_torch = torch_model.layer2[0].downsample(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    got_keras = tf_impl.build_model("resnet20").layer2[0].downsample(x).numpy()
    got_flax = np.asarray(jax_impl.build_model("resnet20").layer2[0].downsample(x))
    for got in (got_torch, got_keras, got_flax):
        assert np.array_equal(got, expected)


# ----------------------------------------------------------------------------- the d2l seed (000, 002-004)

# printed by the seed 000 for X = torch.rand(size=(1, 1, 224, 224)), one line per top-level layer
D2L_SHAPES = [
    (1, 64, 56, 56), (1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7), (1, 512, 1, 1), (1, 512), (1, 10),
]


class Residual(nn.Module):
    """The seed's block, as written there."""

    def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3 is not None:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blk.append(Residual(num_channels, num_channels))
    return blk


def d2l_seed_net() -> nn.Sequential:
    """The seed's nn.Sequential, with random BN parameters and statistics (fresh ones hide swaps)."""
    torch.manual_seed(0)
    b1 = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    b2 = nn.Sequential(*resnet_block(64, 64, 2, first_block=True))
    b3 = nn.Sequential(*resnet_block(64, 128, 2))
    b4 = nn.Sequential(*resnet_block(128, 256, 2))
    b5 = nn.Sequential(*resnet_block(256, 512, 2))
    net = nn.Sequential(b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(512, 10))
    return randomize_torch(net)


@pytest.fixture(scope="module")
def d2l_net() -> nn.Sequential:
    return d2l_seed_net()


def test_d2l_shape_table(d2l_net: nn.Sequential):
    x = torch.rand(size=(1, 1, 224, 224))
    seed_shapes = []
    with torch.no_grad():
        for layer in d2l_net:
            x = layer(x)
            seed_shapes.append(tuple(x.shape))
    assert seed_shapes == D2L_SHAPES  # the reproduction prints what the seed printed
    rows = summary("d2l_resnet18", "torch")  # PyTorch's own layout, NCHW
    assert [layer for layer, _ in rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "flatten", "fc"]
    assert [shape for _, shape in rows] == D2L_SHAPES


def test_d2l_state_dict_ports_to_every_framework(d2l_net: nn.Sequential, tmp_path):
    """The seed's own torch.save'd state_dict, read through the d2l alias table as any checkpoint is."""
    assert {"0.0.weight", "1.0.conv1.weight", "2.0.conv3.weight", "7.weight"} <= set(d2l_net.state_dict())
    torch.save(d2l_net.state_dict(), tmp_path / "d2l.pth")
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype(np.float32)
    with torch.no_grad():
        expected = d2l_net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = checkpoint.load_model("torch", tmp_path / "d2l.pth", arch="d2l_resnet18")
    # the same PyTorch ops in the same order: bit for bit
    assert np.array_equal(torch_impl.features(model, x)["fc"], expected)
    canonical = torch_impl.export_weights(model)
    for impl in (tf_impl, jax_impl):
        ported = impl.build_model("d2l_resnet18")
        impl.import_weights(ported, canonical)
        assert relative_error(impl.features(ported, x)["fc"], expected) <= TOLERANCE


# ----------------------------------------------------------------------------- the TF seed (001)


def residual_block(x, output_channel, name):
    """The seed's residual_block, tf.layers replaced by Keras layers (tf.pad -> ops.pad)."""
    input_channel = x.shape[-1]
    if input_channel * 2 == output_channel:
        increase_dim = True
        strides = (2, 2)
    elif input_channel == output_channel:
        increase_dim = False
        strides = (1, 1)
    else:
        raise Exception("input channel can't match output channel")
    conv1 = layers.Conv2D(
        output_channel, (3, 3), strides=strides, padding="same", activation="relu", name=f"{name}_conv1",
    )(x)
    conv2 = layers.Conv2D(
        output_channel, (3, 3), strides=(1, 1), padding="same", activation="relu", name=f"{name}_conv2",
    )(conv1)
    if increase_dim:
        pooled_x = layers.AveragePooling2D((2, 2), (2, 2), padding="valid")(x)
        padded_x = ops.pad(pooled_x, [[0, 0], [0, 0], [0, 0], [input_channel // 2, input_channel // 2]])
    else:
        padded_x = x
    return conv2 + padded_x


def res_net(x, num_residual_blocks, num_filter_base, class_num):
    """The seed's res_net; its variable scopes conv0, conv{s}_{i}, fc become layer-name prefixes."""
    num_subsampling = len(num_residual_blocks)
    layers_ = [layers.Conv2D(num_filter_base, (3, 3), strides=(1, 1), padding="same", activation="relu", name="conv0")(x)]
    for sample_id in range(num_subsampling):
        for i in range(num_residual_blocks[sample_id]):
            layers_.append(residual_block(layers_[-1], num_filter_base * (2**sample_id), name=f"conv{sample_id}_{i}"))
    global_pool = ops.mean(layers_[-1], [1, 2])
    return layers.Dense(class_num, name="fc")(global_pool)


@pytest.fixture(scope="module")
def tf_seed_net() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    net = keras.Model(inputs, res_net(inputs, [2, 3, 2], 32, 10))
    rng = np.random.default_rng(0)
    for var in net.weights:  # biases too: Keras starts them at zero
        scale = 1 / np.sqrt(np.prod(var.shape[:-1])) if var.name == "kernel" else 0.1
        var.assign(rng.normal(0.0, scale, var.shape).astype(np.float32))
    return net


def seed_to_canonical(net: keras.Model) -> dict[str, np.ndarray]:
    """The seed's layers under our canonical names: conv{s}_{i}_conv{j} is layer{s+1}.{i}.conv{j}."""
    names = {"conv1": "conv0", "fc": "fc"}
    for plan in get_spec("seed_tf_cifar").blocks():
        stage, index = plan.prefix.removeprefix("layer").split(".")
        for j in (1, 2):
            names[f"{plan.prefix}.conv{j}"] = f"conv{int(stage) - 1}_{index}_conv{j}"
    weights = {}
    for path, layer_name in names.items():
        layer = net.get_layer(layer_name)
        kernel = layer.kernel.numpy()
        # HWIO -> OIHW for convs, (in, out) -> (out, in) for the dense layer
        weights[f"{path}.weight"] = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        weights[f"{path}.bias"] = layer.bias.numpy()
    return weights


@pytest.fixture(scope="module")
def tf_seed_case(tf_seed_net: keras.Model):
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    return seed_to_canonical(tf_seed_net), x, tf_seed_net(x).numpy()


@pytest.mark.parametrize("framework", ["torch", "tf", "jax"])
def test_seed_tf_cifar_matches_the_tf_seed(tf_seed_case, framework: str):
    weights, x, expected = tf_seed_case
    impl = frameworks.load(framework)
    model = impl.build_model("seed_tf_cifar")
    impl.import_weights(model, weights)
    assert relative_error(impl.features(model, x)["fc"], expected) <= TOLERANCE


@pytest.mark.parametrize("override", [{"padding": "symmetric"}, {"relu_after_add": True}])
def test_seed_tf_cifar_semantics_are_noticed(tf_seed_case, override: dict):
    weights, x, expected = tf_seed_case
    model = torch_impl.build_model(get_spec("seed_tf_cifar", **override))
    torch_impl.import_weights(model, weights)
    assert relative_error(torch_impl.features(model, x)["fc"], expected) > 1e-2


# ----------------------------------------------------------------------------- seed 001's PyTorch networks


@pytest.mark.parametrize("preset", SEED_TORCH)
def test_seed_torch_counts_and_keys(preset: str):
    net = seed_torch_net(preset)
    stats = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_parameters(get_spec(preset)) == (torch_count(net), stats)
    # the bias on the stem conv alone is what tells these keys from torchvision's
    assert {"conv1.0.bias", "conv2.0.conv1.0.weight", "conv2.0.shortcut.0.weight", "fc.0.weight"} <= set(net.state_dict())
    assert not [k for k in net.state_dict() if k.endswith("0.bias") and k != "conv1.0.bias" and k != "fc.0.bias"]


@pytest.mark.parametrize("preset", [
    "seed_torch_cifar", pytest.param("seed_torch_resnet50", marks=pytest.mark.slow),
])
def test_seed_torch_state_dict_ports_to_every_framework(tmp_path, preset: str):
    net = seed_torch_net(preset)
    torch.save(net.state_dict(), tmp_path / "seed.pt")
    source = checkpoint.Source.open(tmp_path / "seed.pt").read()  # recognised by its keys, renamed by the alias table
    assert source.spec == get_spec(preset), source.notes
    size = 32 if preset == "seed_torch_cifar" else 64
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    for framework in ("torch", "tf", "jax"):
        logits = frameworks.load(framework).features(checkpoint.load_model(framework, tmp_path / "seed.pt"), x)["fc"]
        assert relative_error(logits, expected) <= TOLERANCE, framework
