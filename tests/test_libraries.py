"""Other libraries' checkpoints against the real libraries: Hugging Face transformers, timm, keras-hub, the Flax
ImageNet example (linen, rebuilt in ``flax_imagenet_example.py``) and ONNX out.

For each source: the library builds its own model, every tensor random (BN statistics too), and saves it as the
library does; the file is read into our three frameworks, whose logits must match the library's own forward
(float32 bound 1e-5 relative; for torchvision's and timm's wider models, the rule against the library's own float64
run, and 1e-12 in float64); the canonical weights are written back in the library's format and loaded by
the library itself (strictly: no missing or unexpected keys), which must then compute bit for bit what it
computed before; reading that file again gives the same weights bit for bit. Small models keep this quick;
the presets at full size are slow tests.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from shared import checkpoint, frameworks
from shared.checkpoint import CheckpointError
from shared.cli import main
from shared.convert import convert
from shared.parity import FIXED_FLOAT32, check_tensors, rule_for
from shared.infer import LABELS
from shared.libraries import timm as timm_format
from shared.spec import differing, get_spec
from shared.summary import summary
from shared.weights import canonical_shapes, count_parameters, randomize, relative_error

import library_models
from library_models import flax_variables, randomized

TOL = FIXED_FLOAT32
FRAMEWORKS = list(frameworks.FRAMEWORKS)


def batch(size: int, seed: int = 1, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, size, size, channels)).astype(np.float32)


def torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    return getattr(out, "logits", out).numpy()


def our_errors(path, x: np.ndarray, reference: np.ndarray, arch=None) -> dict[str, float]:
    """Each framework's load_model of ``path``: the relative error of its logits against ``reference``."""
    errors = {}
    for name in FRAMEWORKS:
        model = checkpoint.load_model(name, path, arch)
        errors[name] = relative_error(frameworks.load(name).features(model, x)["fc"], reference)
    return errors


def assert_same_weights(a: dict, b: dict, spec) -> None:
    for key in canonical_shapes(spec):
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def refused(capsys, *args: str) -> str:
    """Run convert, which must end with exit 2 and one line; that line."""
    capsys.readouterr()  # what the libraries printed before
    assert main(["convert", *map(str, args)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- timm


@pytest.fixture(scope="module")
def timm_files(timm, tmp_path_factory):
    """timm's resnet18d, saved as timm saves it: save_for_hf's directory, and a training checkpoint's .pth.tar."""
    from timm.models._hub import save_for_hf

    model = randomized(timm.create_model("resnet18d", num_classes=10))
    folder = tmp_path_factory.mktemp("timm")
    save_for_hf(model, folder / "hub", safe_serialization=True)
    torch.save({"epoch": 3, "arch": "resnet18d", "state_dict": model.state_dict()}, folder / "checkpoint-3.pth.tar")
    x = batch(40)  # 40 px: odd maps (5 -> 3) where ceil_mode decides the average pool
    return folder, x, torch_logits(model, x)


def test_timm_resnet_d_reads_into_every_framework(timm_files):
    folder, x, reference = timm_files
    for path in (folder / "hub" / "model.safetensors", folder / "checkpoint-3.pth.tar"):
        source = checkpoint.Source.open(path).read()  # by its keys: no format, no architecture named
        spec = source.spec
        assert spec == get_spec("resnet18d", num_classes=10), source.notes
    source = checkpoint.Source.open(folder / "hub").read()
    assert source.format.name == "timm" and source.recorded == spec
    errors = our_errors(folder / "hub", x, reference)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("name", ["back.safetensors", "back.pth"])
def test_timm_loads_what_we_write_strictly(timm, timm_files, tmp_path, name):
    folder, x, reference = timm_files
    weights, spec = checkpoint.load(folder / "hub")
    checkpoint.Destination.open(tmp_path / name, "timm").write(weights, spec)
    model = timm.create_model("resnet18d", num_classes=10)
    timm.models.load_checkpoint(model, str(tmp_path / name), strict=True)
    assert np.array_equal(torch_logits(model.eval(), x), reference)
    assert_same_weights(checkpoint.load(tmp_path / name)[0], weights, spec)


def test_timm_refuses_what_it_has_no_model_for(tmp_path):
    spec = get_spec("resnet18d", layers=(1, 1, 1, 1))
    with pytest.raises(CheckpointError, match="timm has no model for resnet18d"):
        checkpoint.Destination.open(tmp_path / "x.safetensors", "timm").write(randomize(spec), spec)


@pytest.mark.parametrize("name", timm_format.MODELS)
def test_timm_builds_each_model_its_format_names(timm, name):
    """Every model a timm file or config.json we write names is one timm builds with the keys and shapes the preset
    derives (on the meta device: nothing allocated)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert canonical_shapes(get_spec(name)) == state


def test_a_timm_state_dict_of_another_model_is_named(capsys, tmp_path):
    torch.save({"stem.conv.weight": torch.zeros(8, 3, 3, 3), "head.fc.weight": torch.zeros(10, 8)}, tmp_path / "v2.pth")
    err = refused(capsys, tmp_path / "v2.pth", tmp_path / "out.safetensors", "--from", "timm")
    assert "classifier is head.fc, where timm's ResNets have fc" in err and not (tmp_path / "out.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", [f"resnet{depth}d" for depth in (18, 34, 50, 101, 152)])
def test_resnet_d_counts_are_timms(timm, name):
    model = timm.create_model(name)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_parameters(get_spec(name)) == (sum(p.numel() for p in model.parameters()), stats)


@pytest.mark.slow
@pytest.mark.parametrize("name", [f"resnet{depth}d" for depth in (34, 50, 101, 152)])
def test_every_resnet_d_matches_timm(timm, impls, tmp_path, name):
    model = randomized(timm.create_model(name, num_classes=10))
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    x = batch(40)
    errors = our_errors(tmp_path / "timm.pth", x, torch_logits(model, x))
    assert max(errors.values()) <= TOL, errors


# ----------------------------------------------------------------------------- Hugging Face transformers

HF_CONFIGS = {
    "basic": dict(layer_type="basic", depths=[1, 2], hidden_sizes=[16, 32], embedding_size=16),
    # downsample_in_bottleneck: the stride on the first 1x1 (v1)
    "v1": dict(layer_type="bottleneck", depths=[2, 1], hidden_sizes=[32, 64], embedding_size=16,
               downsample_in_bottleneck=True),
}


@pytest.fixture(scope="module")
def hf_dirs(transformers, tmp_path_factory):
    """Small ResNetForImageClassification models saved by save_pretrained, and the same under an older
    transformers' file name (pytorch_model.bin, a torch.save'd state_dict)."""
    folder = tmp_path_factory.mktemp("hf")
    x, out = batch(32), {}
    for name, kw in HF_CONFIGS.items():
        model = randomized(transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=10, **kw)))
        model.save_pretrained(folder / name)
        old = folder / f"{name}_bin"
        old.mkdir()
        shutil.copy(folder / name / "config.json", old)
        torch.save(model.state_dict(), old / "pytorch_model.bin")
        out[name] = (folder / name, old, torch_logits(model, x))
    return out, x


@pytest.mark.parametrize("name", HF_CONFIGS)
def test_hf_directory_reads_into_every_framework(hf_dirs, name):
    dirs, x = hf_dirs
    path, old, reference = dirs[name]
    source = checkpoint.Source.open(path).read()
    spec = source.spec
    assert source.format.name == "hf" and spec.stride_on == ("1x1" if name == "v1" else "3x3")
    assert spec.layers == tuple(HF_CONFIGS[name]["depths"]) and spec.num_classes == 10
    assert_same_weights(checkpoint.load(old)[0], source.weights, spec)
    errors = our_errors(path, x, reference)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("name", HF_CONFIGS)
def test_transformers_loads_what_we_write_with_no_missing_keys(transformers, hf_dirs, tmp_path, name):
    dirs, x = hf_dirs
    weights, spec = checkpoint.load(dirs[name][0])
    checkpoint.Destination.open(tmp_path / "back", "hf").write(weights, spec)
    model, info = transformers.ResNetForImageClassification.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not any(info.values()), info
    assert np.array_equal(torch_logits(model.eval(), x), dirs[name][2])
    assert_same_weights(checkpoint.load(tmp_path / "back")[0], weights, spec)


def test_hf_weights_file_alone_reads_with_the_arch_given_or_assumed(hf_dirs):
    dirs, _ = hf_dirs
    file = dirs["v1"][0] / "model.safetensors"
    weights, spec = checkpoint.load(dirs["v1"][0])
    source = checkpoint.Source.open(file).read()  # HF's names give it away; v1 or v1.5, they cannot tell
    assert source.format.name == "hf"
    assert any("not recorded in the weights" in note for note in source.notes)
    assert checkpoint.Source.open(file).read(arch=spec).spec == spec
    assert_same_weights(source.weights, weights, spec)


def test_hf_bad_input_is_one_line(transformers, hf_dirs, capsys, tmp_path):
    dirs, _ = hf_dirs
    source = dirs["basic"][0]
    other = tmp_path / "vit"
    shutil.copytree(source, other)
    (other / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTModel"]}))
    assert "a Hugging Face 'vit' model, not a ResNet" in refused(capsys, other, tmp_path / "a.pt")
    wrong = tmp_path / "wrong"
    shutil.copytree(source, wrong)
    config = json.loads((source / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "depths": [2, 2]}))
    assert "weights do not fit" in refused(capsys, wrong, tmp_path / "b.pt")
    headless = tmp_path / "headless"
    transformers.ResNetModel(transformers.ResNetConfig(**HF_CONFIGS["basic"])).save_pretrained(headless)
    assert "headless ResNetModel" in refused(capsys, headless, tmp_path / "c.pt")
    assert not any((tmp_path / n).exists() for n in ("a.pt", "b.pt", "c.pt"))


# ----------------------------------------------------------------------------- keras-hub

KERAS_HUB = {  # one of each family, small: keras-hub's first stack has 64 filters
    "v1": dict(input_conv_filters=[64], input_conv_kernel_sizes=[7], block_type="basic_block"),
    "v2": dict(input_conv_filters=[64], input_conv_kernel_sizes=[7], block_type="bottleneck_block",
               use_pre_activation=True),
    "vd": dict(input_conv_filters=[16, 16, 64], input_conv_kernel_sizes=[3, 3, 3], block_type="basic_block_vd"),
}


def keras_hub_classifier(keras_hub, **kw):
    """A small ResNetImageClassifier (two stacks) of ``kw``'s family, every variable random, 10 classes."""
    kw = {"stackwise_num_filters": [64, 128], "stackwise_num_blocks": [1, 2], "stackwise_num_strides": [1, 2], **kw}
    return library_models.keras_hub_classifier(keras_hub, **kw)


@pytest.fixture(scope="module")
def keras_hub_presets(keras_hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras_hub")
    x, out = batch(40), {}
    for name, kw in KERAS_HUB.items():
        model = keras_hub_classifier(keras_hub, **kw)
        model.save_to_preset(str(folder / name))
        model.save_weights(str(folder / f"{name}.weights.h5"))
        out[name] = (folder / name, np.asarray(model(x, training=False)))
    return out, x


@pytest.mark.parametrize("name", KERAS_HUB)
def test_keras_hub_preset_reads_into_every_framework(keras_hub_presets, name):
    presets, x = keras_hub_presets
    path, reference = presets[name]
    source = checkpoint.Source.open(path).read()
    spec = source.spec
    assert source.format.name == "keras-hub"
    assert spec.name == {"v1": "resnet18", "v2": "keras_hub_resnet50v2", "vd": "keras_hub_resnet18vd"}[name]
    # a classifier's own .weights.h5 records no architecture: read with the preset's
    whole = path.parent / f"{name}.weights.h5"
    assert checkpoint.detect_format(whole).name == "keras-hub"  # by its nested backbone
    assert_same_weights(checkpoint.load(whole, arch=spec)[0], source.weights, spec)
    errors = our_errors(path, x, reference)
    assert max(errors.values()) <= TOL, errors


# the preset holds no optimizer state: keras-hub keeps its own compile()'s optimizer, and says so
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("name", KERAS_HUB)
def test_keras_hub_loads_the_preset_we_write(keras_hub, keras_hub_presets, tmp_path, name):
    presets, x = keras_hub_presets
    weights, spec = checkpoint.load(presets[name][0])
    checkpoint.Destination.open(tmp_path / "back", "keras-hub").write(weights, spec)
    model = keras_hub.models.ResNetImageClassifier.from_preset(str(tmp_path / "back"))
    assert np.array_equal(np.asarray(model(x, training=False)), presets[name][1])
    assert isinstance(keras_hub.models.ResNetBackbone.from_preset(str(tmp_path / "back")), keras_hub.models.ResNetBackbone)
    assert_same_weights(checkpoint.load(tmp_path / "back")[0], weights, spec)


def test_keras_hub_bad_input_is_one_line(keras_hub_presets, capsys, tmp_path):
    presets, _ = keras_hub_presets
    other = tmp_path / "vit"
    shutil.copytree(presets["v1"][0], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "class_name": "ViTBackbone",
                                                   "registered_name": "keras_hub>ViTBackbone"}))
    assert "a keras-hub ViTBackbone, not a ResNetBackbone" in refused(capsys, other, tmp_path / "a.pt")
    assert "record no architecture: pass --arch NAME" in refused(
        capsys, presets["v1"][0].parent / "v1.weights.h5", tmp_path / "b.pt")
    spec = get_spec("resnet18", stem="cifar")
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'c'}: keras-hub has no ResNet with stem='cifar'"):
        checkpoint.Destination.open(tmp_path / "c", "keras-hub").write(randomize(spec), spec)
    spec = get_spec("resnet20")
    with pytest.raises(CheckpointError, match="keras-hub has no ResNet like resnet20: .* first stack has 64 filters"):
        checkpoint.Destination.open(tmp_path / "d", "keras-hub").write(randomize(spec), spec)


# Kaggle's presets: (config, the preset here); vd_50 and up are timm's resnet50d.. resnet152d
KERAS_HUB_PRESETS = {
    "resnet_18": ("v1", [2, 2, 2, 2], "basic", "resnet18"),
    "resnet_50": ("v1", [3, 4, 6, 3], "bottleneck", "resnet50"),
    "resnet_v2_50": ("v2", [3, 4, 6, 3], "bottleneck", "keras_hub_resnet50v2"),
    "resnet_v2_101": ("v2", [3, 4, 23, 3], "bottleneck", "keras_hub_resnet101v2"),
    "resnet_vd_18": ("vd", [2, 2, 2, 2], "basic", "keras_hub_resnet18vd"),
    "resnet_vd_34": ("vd", [3, 4, 6, 3], "basic", "keras_hub_resnet34vd"),
    "resnet_vd_50": ("vd", [3, 4, 6, 3], "bottleneck", "resnet50d"),
    "resnet_vd_101": ("vd", [3, 4, 23, 3], "bottleneck", "resnet101d"),
    "resnet_vd_152": ("vd", [3, 8, 36, 3], "bottleneck", "resnet152d"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", KERAS_HUB_PRESETS)
def test_keras_hub_presets_are_ours(keras_hub, tmp_path, name):
    family, blocks, block, preset = KERAS_HUB_PRESETS[name]
    kw = {**KERAS_HUB[family], "block_type": f"{block}_block{'_vd' if family == 'vd' else ''}"}
    if family == "vd":  # the presets' deep stem is timm's, 32-32-64
        kw["input_conv_filters"] = [32, 32, 64]
    model = library_models.keras_hub_classifier(
        keras_hub, num_classes=1000, stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=blocks,
        stackwise_num_strides=[1, 2, 2, 2], **kw)
    params, stats = count_parameters(get_spec(preset))
    assert model.count_params() == params + stats  # Keras counts the BN statistics as weights
    model.save_to_preset(str(tmp_path / name))
    x = batch(40)
    errors = our_errors(tmp_path / name, x, np.asarray(model(x, training=False)))
    assert checkpoint.load(tmp_path / name)[1].name == preset and max(errors.values()) <= TOL, errors


# ----------------------------------------------------------------------------- the Flax ImageNet example (linen)


@pytest.fixture(scope="module")
def flax_example(tmp_path_factory):
    """The example's network (basic blocks, two stages, 16 filters) with random variables, saved as msgpack
    (flax.serialization.to_bytes) and as the example saves its TrainState (flax.training.checkpoints, Orbax)."""
    import optax
    from flax import serialization
    from flax.training import checkpoints

    from flax_imagenet_example import ResNet, ResNetBlock, TrainState

    model = ResNet(stage_sizes=(2, 2), block_cls=ResNetBlock, num_classes=10, num_filters=16)
    x = batch(32)  # even maps: 'SAME' pads the bottom/right only
    variables = flax_variables(model, x)
    folder = tmp_path_factory.mktemp("flax")
    (folder / "variables.msgpack").write_bytes(serialization.to_bytes(variables))
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optax.sgd(0.1, 0.9),
                              batch_stats=variables["batch_stats"])
    checkpoints.save_checkpoint(folder / "workdir", state, step=7)
    return model, variables, folder, x, np.asarray(model.apply(variables, x))


def test_flax_example_reads_into_every_framework(flax_example):
    _, _, folder, x, reference = flax_example
    source = checkpoint.Source.open(folder / "variables.msgpack").read()  # a .msgpack, recognised by its names
    spec = source.spec
    assert source.format.name == "flax-linen" and (spec.padding, spec.stem_padding) == ("tf_same", "symmetric")
    assert spec.layers == (2, 2) and spec.widths == (16, 32) and "layer1.0.downsample.0.weight" not in source.weights
    errors = our_errors(folder / "variables.msgpack", x, reference)
    assert max(errors.values()) <= TOL, errors


def test_flax_example_training_checkpoint_reads_too(flax_example):
    _, _, folder, _, _ = flax_example
    weights, spec = checkpoint.load(folder / "variables.msgpack")
    path = folder / "workdir" / "checkpoint_7"
    source = checkpoint.Source.open(path, "flax-linen").read()
    assert source.spec == spec
    assert_same_weights(source.weights, weights, spec)


def test_flax_example_padding_is_not_torchs(flax_example):
    # the deliberate mistake: the example's weights in a network that pads symmetrically everywhere
    _, _, folder, x, reference = flax_example
    weights, spec = checkpoint.load(folder / "variables.msgpack")
    model = frameworks.load_checkpoints("torch").model_from_weights(spec.replace(padding="symmetric"), weights)
    assert relative_error(frameworks.load("torch").features(model, x)["fc"], reference) > 1e-2


@pytest.mark.parametrize("name", ["back.msgpack", "back_orbax"])
def test_the_flax_example_loads_what_we_write(flax_example, tmp_path, name):
    import orbax.checkpoint as ocp
    from flax import serialization

    model, variables, folder, x, reference = flax_example
    weights, spec = checkpoint.load(folder / "variables.msgpack")
    checkpoint.Destination.open(tmp_path / name, "flax-linen").write(weights, spec)
    if name.endswith(".msgpack"):
        back = serialization.from_bytes(variables, (tmp_path / name).read_bytes())
    else:
        back = ocp.StandardCheckpointer().restore((tmp_path / name).absolute(), variables)
    assert np.array_equal(np.asarray(model.apply(back, x)), reference)
    assert_same_weights(checkpoint.load(tmp_path / name, "flax-linen")[0], weights, spec)


def test_the_flax_example_builds_no_torchvision_resnet(tmp_path):
    spec = get_spec("resnet18")  # pads its 3x3s symmetrically: the example would compute something else
    with pytest.raises(CheckpointError, match="the Flax ImageNet example has no ResNet with padding='symmetric'"):
        checkpoint.Destination.open(tmp_path / "x.msgpack", "flax-linen").write(randomize(spec), spec)


# ----------------------------------------------------------------------------- ONNX


NARROW = dict(layers=(1, 1), widths=(8, 16), strides=(1, 2), num_classes=10, image_size=40)
ONNX_SPECS = {
    # a small ResNet-D: the average pool's ceil mode and the deep stem go through the exporter too
    "resnet-d": get_spec("resnet18d", **NARROW, stem_widths=(8, 8), stem_width=16),
    # grouped convs and SE's gate; ECA's 1-D conv over the channels, on ResNet-D
    "seresnext": get_spec("seresnext50_32x4d", **NARROW, stem_width=16, groups=4, width_per_group=32),
    "ecaresnet-d": get_spec("ecaresnet50d", **NARROW, stem_widths=(8, 8), stem_width=16),
}


@pytest.mark.parametrize("name", ONNX_SPECS)
def test_onnx_export_is_verified_in_onnxruntime(tmp_path, name):
    import onnx
    import onnxruntime

    spec = ONNX_SPECS[name]
    weights = randomize(spec, seed=5)
    checkpoint.save(tmp_path / "small.safetensors", weights, spec)
    report = convert(tmp_path / "small.safetensors", tmp_path / "small.onnx")
    v = report["verification"]
    assert report["to"] == "onnx" and v["passed"] and v["frameworks"] == ["torch", "onnxruntime"]
    assert v["weights_identical"] is None and v["relative_error"] <= TOL
    graph = onnx.load(tmp_path / "small.onnx")
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {checkpoint.ONNX_OPSET}
    # any batch and size, odd ones included
    x = batch(37)[:1].repeat(3, axis=0)
    session = onnxruntime.InferenceSession(str(tmp_path / "small.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.transpose(0, 3, 1, 2).copy()})[0]
    model = frameworks.load_checkpoints("torch").model_from_weights(spec, weights)
    assert relative_error(got, frameworks.load("torch").features(model, x)["fc"]) <= TOL
    with pytest.raises(CheckpointError, match="is written, not read"):
        checkpoint.Source.open(tmp_path / "small.onnx", "onnx")


# ----------------------------------------------------------------------------- torchvision's ResNeXt and Wide ResNets, timm's SE and ECA

# each preset, and the library whose model it is (its name there is the preset's)
WIDER = {
    "resnext50_32x4d": "torchvision", "resnext101_32x8d": "torchvision", "resnext101_64x4d": "torchvision",
    "wide_resnet50_2": "torchvision", "wide_resnet101_2": "torchvision",
    "seresnet50": "timm", "seresnext50_32x4d": "timm", "ecaresnet50d": "timm", "ecaresnet50t": "timm",
}
# timm's ResNet has four stages; channels (16, 32, 64, 128) keep it small
SMALL = dict(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), num_classes=10)


def small_library_models(torchvision, timm) -> dict:
    """The libraries' own classes in small configurations, one of each kind: torchvision's grouped Bottleneck (its
    ResNet has four stages), timm's SE on grouped blocks and ECA on ResNet-D; with the spec each one is."""
    from timm.models.resnet import Bottleneck, ResNet

    tv = torchvision.models.resnet
    return {
        "torchvision-resnext": (tv.ResNet(tv.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=16, num_classes=10),
                                get_spec("resnext50_32x4d", layers=(1, 1, 1, 1), groups=4, width_per_group=16, num_classes=10)),
        "timm-seresnext": (ResNet(Bottleneck, (1, 1, 1, 1), channels=SMALL["widths"], cardinality=4, base_width=16,
                                  num_classes=10, block_args=dict(attn_layer="se")),
                           get_spec("seresnext50_32x4d", **SMALL, groups=4, width_per_group=16)),  # its 7x7 stem: 64
        "timm-ecaresnet-d": (ResNet(Bottleneck, (1, 1, 1, 1), channels=SMALL["widths"], stem_type="deep", stem_width=8, avg_down=True,
                                    num_classes=10, block_args=dict(attn_layer="eca")),
                             get_spec("ecaresnet50d", **SMALL, stem_widths=(8, 8), stem_width=16)),
    }


def library_model(request, name: str, **kw) -> torch.nn.Module:
    library = request.getfixturevalue(WIDER[name])
    if WIDER[name] == "timm":
        return library.create_model(name, **kw)
    return getattr(library.models, name)(**kw)


@pytest.mark.parametrize("name", WIDER)
def test_wider_counts_names_and_shapes_are_the_libraries(request, name):
    """Parameters, BN statistics and every state_dict key and shape of the library's own model (on the meta
    device: nothing is allocated or drawn) against what the spec derives."""
    with torch.device("meta"):
        model = library_model(request, name)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert count_parameters(get_spec(name)) == (sum(p.numel() for p in model.parameters()), stats)
    assert canonical_shapes(get_spec(name)) == state  # names, shapes and, as dicts compare, nothing else


def ports_both_ways(model: torch.nn.Module, fresh, spec, path, arch=None) -> None:
    """``model`` (every tensor random), saved as its users save it (torch.save of the state_dict), read by our three
    frameworks: their logits judged by the rule against the library's own float64 run (float32: within k times the
    library's float32 error; float64: 1e-12); each framework's export, written as .pth and .safetensors, loads
    strict=True into ``fresh()``, a new model of the library's, which then computes bit for bit what ``model`` did."""
    torch.save(model.state_dict(), path / "library.pth")
    x = batch(40)  # 40 px: odd maps (5 -> 3) where ResNet-D's ceil_mode decides the average pool
    reference = torch_logits(model, x)
    truth = torch_logits(copy.deepcopy(model).double(), x.astype(np.float64))  # the library's float64 run: the truth
    source = checkpoint.Source.open(path / "library.pth").read(arch)
    read, weights = source.spec, source.float32()
    assert not differing(read, spec, ignore=LABELS), differing(read, spec, ignore=LABELS)
    rule, rule64 = rule_for("float32", "eval", None), rule_for("float64", "eval", None)
    for fw in FRAMEWORKS:
        impl, build = frameworks.load(fw), frameworks.load_checkpoints(fw).model_from_weights
        ours = checkpoint.load_model(fw, path / "library.pth", arch)
        (check,) = check_tensors(["fc"], impl.features(ours, x), {"fc": reference}, {"fc": truth}, rule)
        with impl.numerics("float64"):
            wide = impl.features(build(spec, {k: v.astype(np.float64) for k, v in weights.items()}, "float64"),
                                 x.astype(np.float64))
        (check64,) = check_tensors(["fc"], wide, {"fc": truth}, None, rule64)
        print(f"{spec.name} -> {fw}: float32 {check.error:.1e} (floor {check.floor:.1e}, ratio {check.ratio:.2f}, "
              f"limit {check.limit:.1e}); float64 {check64.error:.1e}")
        assert check.passed and check64.passed, (fw, check, check64)
        exported = impl.export_weights(ours)
        for file in (f"{fw}.pth", f"{fw}.safetensors"):
            checkpoint.save(path / file, exported, spec, "torch" if file.endswith(".pth") else "safetensors")
            back = fresh()
            back.load_state_dict(torch.load(path / file) if file.endswith(".pth") else load_file(path / file), strict=True)
            assert np.array_equal(torch_logits(back.eval(), x), reference), (fw, file)


@pytest.mark.parametrize("name", ["torchvision-resnext", "timm-seresnext", "timm-ecaresnet-d"])
def test_small_wider_library_models_port_both_ways(torchvision, timm, tmp_path, name):
    """The libraries' own grouped, SE and ECA blocks, small; a file of theirs records no architecture: read with the
    spec given, as a user passes --arch (``test_wider_presets_port_both_ways`` infers it for the presets)."""
    model, spec = small_library_models(torchvision, timm)[name]
    ports_both_ways(randomized(model), lambda: small_library_models(torchvision, timm)[name][0], spec, tmp_path, spec)


def library_shapes(model: torch.nn.Module, size: int) -> dict[str, tuple[int, ...]]:
    """The output shapes (NCHW) of a torchvision or timm ResNet's stem (its max-pool), stages and fc on one image,
    under ``summary``'s row names."""
    shapes = {}
    hooks = [getattr(model, module).register_forward_hook(
        lambda _, __, out, row=row: shapes.__setitem__(row, tuple(out.shape)))
        for module, row in {"maxpool": "stem", **{f"layer{i}": f"layer{i}" for i in range(1, 5)}, "fc": "fc"}.items()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return shapes


def assert_summaries_are(spec, shapes: dict, size: int) -> None:
    """``summary`` in each framework, its own layout (NCHW for PyTorch, else NHWC), against ``shapes`` (NCHW)."""
    for fw in FRAMEWORKS:
        rows = dict(summary(spec, fw, size=size))
        nhwc = frameworks.load(fw).LAYOUT == "NHWC"
        want = {row: (s[0], *s[2:], s[1]) if nhwc and len(s) == 4 else s for row, s in shapes.items()}
        assert {row: rows[row] for row in want} == want, fw


def test_summary_of_a_wider_model_is_the_librarys(torchvision, timm):
    model, spec = small_library_models(torchvision, timm)["timm-seresnext"]
    assert_summaries_are(spec, library_shapes(model, 32), 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", WIDER)
def test_summary_of_every_wider_preset_is_the_librarys(request, name):
    with torch.device("meta"):
        model = library_model(request, name)
    assert_summaries_are(get_spec(name), library_shapes(model.to_empty(device="cpu"), 64), 64)


# one in the default suite: grouped convs and SE
@pytest.mark.parametrize("name", [n if n == "seresnext50_32x4d" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in WIDER])
def test_timm_loads_the_family_we_write_strictly(timm, tmp_path, name):
    """Each wider preset in our timm format, as .safetensors, .pth and save_for_hf's directory (which
    ``timm.create_model("local-dir:...", pretrained=True)`` loads): timm loads it strictly with every tensor bit for
    bit ours, and we read back the same bits. At full size: timm builds only its own geometry."""
    spec = get_spec(name, num_classes=10)
    weights = randomize(spec, seed=2)
    for written in (tmp_path / "w.safetensors", tmp_path / "w.pth", tmp_path / "dir"):
        checkpoint.Destination.open(written, "timm").write(weights, spec)
        if written.suffix:
            model = timm.create_model(name, num_classes=10)
            timm.models.load_checkpoint(model, str(written), strict=True)
        else:
            model = timm.create_model(f"local-dir:{written}", pretrained=True)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        assert_same_weights(state, weights, spec)
        assert_same_weights(checkpoint.load(written)[0], weights, spec)


# each of the family's fields, in a network as small as keras-hub's ResNets go (its first stack has 64 filters)
SHORT = dict(layers=(1, 1), widths=(64, 128), strides=(1, 2), num_classes=10)
LACKED = {
    "groups=32": get_spec("resnext50_32x4d", **SHORT),
    "width_per_group=128": get_spec("wide_resnet50_2", **SHORT),
    "attention='se'": get_spec("seresnet50", **SHORT),
    "attention='eca'": get_spec("ecaresnet50d", **SHORT),
}


@pytest.mark.parametrize("fmt", ["hf", "keras-hub", "flax-linen"])
@pytest.mark.parametrize("field", LACKED)
def test_libraries_without_the_family_refuse_it_naming_the_field(capsys, tmp_path, field, fmt):
    """Hugging Face's ResNetConfig, keras-hub's ResNetBackbone and the Flax example have no groups, width or gate:
    convert refuses in one line (exit 2) that names the field, and writes nothing."""
    spec = LACKED[field]
    checkpoint.save(tmp_path / "w.safetensors", randomize(spec), spec)
    err = refused(capsys, tmp_path / "w.safetensors", tmp_path / "out", "--to", fmt)
    assert "has no ResNet with " in err and f" {field} (it has " in err, err
    assert list(tmp_path.iterdir()) == [tmp_path / "w.safetensors"]


@pytest.mark.slow
@pytest.mark.parametrize("name", WIDER)
def test_wider_presets_port_both_ways(request, tmp_path, name):
    model = randomized(library_model(request, name, num_classes=10))
    ports_both_ways(model, lambda: library_model(request, name, num_classes=10), get_spec(name, num_classes=10), tmp_path)
