"""The spec and the canonical format against numbers published outside this code."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import SpecError
from shared.recipe import bn_sample_counts
from shared.spec import get_spec, list_specs
from shared.weights import canonical_shapes, count_parameters

# torchvision's published parameter counts (BN running statistics not included)
PUBLISHED = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}
# BN running statistics: 2 x the BN channels, summed by hand from the torchvision architecture
BN_STATS = {"resnet18": 9_600, "resnet50": 53_120, "resnext50_32x4d": 68_224, "wide_resnet50_2": 68_224}
# (parameters, BN statistics) of the other libraries' own models with 1000 classes: timm.create_model(name) for
# ResNet-D; keras-hub's ResNetImageClassifier (its count_params() is the sum: 11,722,824 for resnet_vd_18, as its
# preset metadata says); seed 001's networks (1000 and 10 classes). test_libraries.py and test_variants.py count
# the live models again.
LIBRARY_COUNTS = {
    "resnet18d": (11_708_744, 9_728),
    "resnet34d": (21_816_904, 17_152),
    "resnet50d": (25_576_264, 53_248),
    "resnet101d": (44_568_392, 105_472),
    "resnet152d": (60_212_040, 151_552),
    "keras_hub_resnet18vd": (11_712_968, 9_856),
    "keras_hub_resnet34vd": (21_821_128, 17_280),
    "keras_hub_resnet50v2": (25_549_352, 45_440),
    "keras_hub_resnet101v2": (44_541_480, 97_664),
    "seed_torch_resnet50": (25_557_096, 53_120),
    "seed_torch_cifar": (1_450_122, 10_112),
    # timm.create_model(name), counted again live in test_libraries.py
    "seresnet50": (28_088_024, 53_120),
    "seresnext50_32x4d": (27_559_896, 68_224),
    "ecaresnet50d": (25_576_350, 53_248),
    "ecaresnet50t": (25_573_814, 53_232),
}


@pytest.mark.parametrize("arch", PUBLISHED)
def test_parameter_counts_match_torchvision(arch):
    assert count_parameters(get_spec(arch))[0] == PUBLISHED[arch]


@pytest.mark.parametrize("arch", LIBRARY_COUNTS)
def test_parameter_counts_match_the_libraries(arch):
    assert count_parameters(get_spec(arch)) == LIBRARY_COUNTS[arch]


@pytest.mark.parametrize("arch", BN_STATS)
def test_bn_statistics_counted_separately(arch):
    assert count_parameters(get_spec(arch))[1] == BN_STATS[arch]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_native_counts_agree_with_the_spec(impls, arch):
    spec = get_spec(arch)
    params, stats = count_parameters(spec)
    torch_model = impls["torch"].build_model(spec)
    assert sum(p.numel() for p in torch_model.parameters()) == params
    assert sum(b.numel() for n, b in torch_model.named_buffers() if n.endswith(("running_mean", "running_var"))) == stats
    # Keras counts the BN moving statistics as weights too
    assert impls["tf"].build_model(spec).count_params() == params + stats
    import jax
    from flax import nnx

    flax_model = impls["jax"].build_model(spec)
    assert sum(x.size for x in jax.tree.leaves(nnx.state(flax_model, nnx.Param))) == params
    assert sum(x.size for x in jax.tree.leaves(nnx.state(flax_model, nnx.BatchStat))) == stats


def test_torchvision_state_dict_keys(impls):
    # torchvision's resnet18 / resnet50 state_dicts have 122 / 320 entries (num_batches_tracked included)
    for arch, n in (("resnet18", 122), ("resnet50", 320)):
        state = impls["torch"].build_model(arch).state_dict()
        assert len(state) == n
    state = impls["torch"].build_model("resnet50").state_dict()
    assert tuple(state["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(state["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)  # v1.5: stride here
    assert tuple(state["layer4.2.bn3.running_var"].shape) == (2048,)
    assert tuple(state["fc.weight"].shape) == (1000, 2048)
    assert "layer1.0.conv1.bias" not in state


def same_distribution(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Two draws of one initialisation: the same constants, or means and spreads within 6 standard errors."""
    if np.ptp(theirs) == 0:
        return np.array_equal(ours, theirs)
    n = min(ours.size, theirs.size)
    std = theirs.std()  # a sample std's relative standard error is 1/sqrt(2n); a difference of two, 1/sqrt(n)
    return abs(ours.mean() - theirs.mean()) < 6 * std * np.sqrt(2 / n) and abs(ours.std() / std - 1) < 6 / np.sqrt(n)


def resnet18_init(torchvision) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items() if "num_batches" not in k}


def check_initialisation(name: str, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert ours.keys() == theirs.keys()
    wrong = [k for k in theirs if not same_distribution(ours[k], theirs[k])]
    assert not wrong, f"{name}: {wrong}"


def test_initialisation_is_torchvisions(impls, torchvision):
    """Every framework's build_model initialises each tensor as torchvision's own resnet18 does."""
    theirs = resnet18_init(torchvision)
    for name, impl in impls.items():
        check_initialisation(name, impl.export_weights(impl.build_model("resnet18", seed=1)), theirs)
    # the check sees He normal over fan-in, 1/sqrt(2) of fan-out's where a conv doubles the channels
    cout, cin, kh, kw = theirs["layer2.0.conv1.weight"].shape
    fan_in = np.random.default_rng(0).normal(0, np.sqrt(2 / (cin * kh * kw)), (cout, cin, kh, kw))
    assert not same_distribution(fan_in, theirs["layer2.0.conv1.weight"])


@pytest.mark.slow
def test_flax_constructor_initialises_as_build_model(impls, torchvision):
    """``ResNet(spec, rngs=...)`` draws op by op with JAX what build_model draws on the host (6 s: a compile per shape)."""
    from flax import nnx

    model = impls["jax"].resnet.ResNet(get_spec("resnet18"), rngs=nnx.Rngs(1))
    check_initialisation("jax constructor", impls["jax"].export_weights(model), resnet18_init(torchvision))


def test_v15_puts_the_stride_on_the_3x3(impls):
    model = impls["torch"].build_model("resnet50")
    assert model.layer2[0].conv1.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)
    v1 = impls["torch"].build_model("keras_resnet50")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)


def test_get_spec_overrides_and_errors():
    spec = get_spec("resnet18", num_classes=10, in_channels=1)
    assert (spec.num_classes, spec.in_channels) == (10, 1)
    shapes = canonical_shapes(spec)
    assert shapes["conv1.weight"] == (64, 1, 7, 7) and shapes["fc.weight"] == (10, 512)
    assert get_spec(spec) is spec
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        get_spec("resnet19")
    with pytest.raises(ValueError, match="unknown spec fields: colour"):
        get_spec("resnet18", colour=1)
    with pytest.raises(ValueError, match=r"num_classes must be >= 0 \(0: a headless backbone\)"):
        get_spec("resnet18", num_classes=-1)
    with pytest.raises(AttributeError):
        spec.num_classes = 5  # frozen


def test_a_headless_backbone_has_no_classifier():
    """num_classes=0, as timm's: no fc tensors; resnet50's count less its 2048 x 1000 + 1000 classifier (torchvision's
    published 25,557,032)."""
    spec = get_spec("resnet50", num_classes=0)
    assert spec.headless and spec.plan().fc is None
    assert not any(k.startswith("fc.") for k in canonical_shapes(spec))
    assert count_parameters(spec)[0] == 25_557_032 - (2048 * 1000 + 1000)


def test_list_specs_covers_the_family():
    names = list_specs()
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet20", "resnet1202",
                 "d2l_resnet18", "seed_tf_cifar", "keras_resnet50", "keras_resnet50v2"):
        assert name in names
    for name in names:
        spec = get_spec(name)
        assert spec.name == name and len(spec.blocks()) == sum(spec.layers)


@pytest.mark.parametrize("field,value", [
    ("block", "bottelneck"), ("stem", "deep-ish"), ("shortcut", "projected"), ("stride_on", "2x2"),
    ("stride_block", "frist"), ("padding", "same"), ("preact", 1), ("conv_bias", "yes"), ("layers", (2, 0, 2, 2)),
    ("widths", (64, 128)), ("strides", (1, 2, 2, 2.5)), ("stem_width", 0), ("bn_eps", 0.0), ("bn_momentum", 1.0),
    ("image_size", -1), ("stem_widths", (32, 32)), ("shortcut_at", "stage_end"), ("stem_padding", "valid"),
    ("groups", 0), ("width_per_group", 0), ("attention", "cbam"), ("se_rd_ratio", 0.0), ("se_rd_divisor", 0),
    ("eca_gamma", 0.0), ("eca_beta", -1.0),
])
def test_every_field_is_validated(field, value):
    with pytest.raises(SpecError, match=field):
        get_spec("resnet18", **{field: value})


def test_fields_that_only_go_together():
    with pytest.raises(SpecError, match="stem_widths"):
        get_spec("resnet18d", stem_widths=())  # a deep stem needs its widths
    with pytest.raises(SpecError, match="pool_zero_pad"):
        get_spec("keras_resnet50v2", padding="tf_same")
    with pytest.raises(SpecError, match="basic blocks take only groups=1 and width_per_group=64"):
        get_spec("resnet18", groups=32)  # torchvision's BasicBlock refuses them too
    with pytest.raises(SpecError, match="width_per_group=2 leaves a stage of widths"):
        get_spec("resnet50", widths=(16, 32, 64, 128), width_per_group=2)  # int(16 * 2 / 64) = 0 channels
    with pytest.raises(SpecError, match="not on pre-activation blocks"):
        get_spec("keras_resnet50v2", attention="se")
    with pytest.raises(SpecError, match="se_rd_ratio set, but attention='none'"):
        get_spec("resnet50", se_rd_ratio=0.25)
    with pytest.raises(SpecError, match="eca_gamma set, but attention='se'"):
        get_spec("seresnet50", eca_gamma=3.0)


# Xie et al. 2017, table 1 (ResNeXt-50 32x4d) and Zagoruyko & Komodakis 2016 / torchvision's docstring (Wide
# ResNet-50-2): each stage's bottleneck (1x1 out, 3x3 out and its groups, 1x1 out); Hu et al. 2018: SE squeezes
# C to C / 16; Wang et al. 2020 eq. 12 with timm's rounding (int, then up to odd, at least 3): ECA's kernel for
# C = 256, 512, 1024, 2048 is 5, 5, 5, 7
STAGES = {
    "resnet50": [(64, 64, 1, 256), (128, 128, 1, 512), (256, 256, 1, 1024), (512, 512, 1, 2048)],
    "resnext50_32x4d": [(128, 128, 32, 256), (256, 256, 32, 512), (512, 512, 32, 1024), (1024, 1024, 32, 2048)],
    "resnext101_64x4d": [(256, 256, 64, 256), (512, 512, 64, 512), (1024, 1024, 64, 1024), (2048, 2048, 64, 2048)],
    "wide_resnet50_2": [(128, 128, 1, 256), (256, 256, 1, 512), (512, 512, 1, 1024), (1024, 1024, 1, 2048)],
}


@pytest.mark.parametrize("arch", STAGES)
def test_the_plan_has_the_papers_bottlenecks(arch):
    spec = get_spec(arch)
    firsts = [b for b in spec.blocks() if b.prefix.endswith(".0")]
    assert [(b.convs[0].out_channels, b.convs[1].out_channels, b.convs[1].groups, b.out_channels) for b in firsts] == STAGES[arch]
    assert spec.stage_widths == tuple(stage[-1] for stage in STAGES[arch])
    shapes = canonical_shapes(spec)
    out, width, groups, _ = STAGES[arch][0]
    assert shapes["layer1.0.conv2.weight"] == (width, width // groups, 3, 3)


def test_the_gates_are_the_papers():
    se = [b.attention for b in get_spec("seresnet50").blocks() if b.prefix.endswith(".0")]
    assert [(a.kind, a.channels, a.convs[0].out_channels) for a in se] == [
        ("se", 256, 16), ("se", 512, 32), ("se", 1024, 64), ("se", 2048, 128)]
    eca = [b.attention for b in get_spec("ecaresnet50d").blocks() if b.prefix.endswith(".0")]
    assert [(a.kind, a.convs[0].kernel) for a in eca] == [("eca", 5), ("eca", 5), ("eca", 5), ("eca", 7)]
    shapes = canonical_shapes(get_spec("ecaresnet50d"))
    assert shapes["layer4.2.se.conv.weight"] == (1, 1, 7) and "layer4.2.se.conv.bias" not in shapes
    shapes = canonical_shapes(get_spec("seresnext50_32x4d"))
    assert shapes["layer1.0.se.fc1.weight"] == (16, 256, 1, 1) and shapes["layer1.0.se.fc2.bias"] == (256,)


@pytest.mark.parametrize("arch", list_specs())
def test_bn_sample_counts_are_what_each_bn_sees(impls, arch):
    """The derived BN sample counts against what every BN of the PyTorch model averages over in training, on the
    meta device (shapes only: every preset in milliseconds), at a size where ceil and floor differ."""
    import torch

    spec = get_spec(arch)
    size = 36 if spec.shortcut == "avgpool_pad" else 37  # the TF seed's 2x2 average pool floors: its network takes even sizes
    with torch.device("meta"):
        model = impls["torch"].resnet.ResNet(spec)
    seen = {}
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(lambda m, inp, out, path=path: seen.__setitem__(path, inp[0].numel() // inp[0].shape[1]))
    model.train()(torch.empty(3, spec.in_channels, size, size, device="meta"))
    assert bn_sample_counts(spec, 3, size) == seen


def test_resnet_d_names_and_shapes_are_timms():
    # timm's resnet50d state_dict: 332 entries (55 num_batches_tracked); the deep stem 32-32-64, the shortcut's
    # conv behind an average pool (also in layer1, at stride 1, where timm's pool is an Identity)
    shapes = canonical_shapes(get_spec("resnet50d"))
    assert len(shapes) + 55 == 332
    assert [(k, shapes[k]) for k in shapes if k.startswith("conv1.") and k.endswith("weight")] == [
        ("conv1.0.weight", (32, 3, 3, 3)), ("conv1.1.weight", (32,)), ("conv1.3.weight", (32, 32, 3, 3)),
        ("conv1.4.weight", (32,)), ("conv1.6.weight", (64, 32, 3, 3)),
    ]
    assert shapes["layer1.0.downsample.1.weight"] == (256, 64, 1, 1) and shapes["layer1.0.downsample.2.weight"] == (256,)
    assert "layer1.0.downsample.0.weight" not in shapes and "layer1.0.downsample.1.weight" not in canonical_shapes(
        get_spec("resnet18d"))  # no projection where a basic stage keeps its channels


def test_shared_never_imports_a_framework():
    import subprocess
    import sys

    code = (  # every module of the package, the command line's included
        "import importlib, pkgutil, sys, shared;"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(shared.__path__, 'shared.') if not m.name.endswith('__main__')];"
        "bad = [m for m in ('torch', 'tensorflow', 'jax', 'flax', 'keras') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_python_api_prints_nothing():
    """Importing the three packages and running each once writes nothing to stderr (TensorFlow's C++ notices included)."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, pytorch_impl, tensorflow_impl, jax_impl;"
        "x = np.zeros((1, 32, 32, 3), np.float32);"
        "[impl.features(impl.build_model('resnet20'), x) for impl in (pytorch_impl, tensorflow_impl, jax_impl)]"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "RESNET_PARITY"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
