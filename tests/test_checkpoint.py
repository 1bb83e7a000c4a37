"""Checkpoint files: every format pair round-trips bit-exact, files load with each framework's own loader,
the architecture is recorded or inferred, and writes are atomic."""

from __future__ import annotations

import argparse
import dataclasses
import json
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

from helpers import as_torch, torch_save
from shared import checkpoint
from shared.checkpoint import safetensors as _safetensors  # noqa: F401  (monkeypatched as checkpoint.safetensors)
from shared.checkpoint import CheckpointError
from shared.infer import ArchitectureError, infer
from shared.spec import PRESETS, get_spec
from shared.weights import canonical_shapes, randomize

# Every layer kind the formats map (7x7 stem, BN, projection shortcut, fc), narrowed so 30 pairs stay fast;
# the narrowing also exercises overrides recorded in, or inferred from, the files.
SMALL = get_spec("resnet18", stem_width=8, widths=(8, 16, 32, 64), num_classes=10)
NAMES = {
    "torch": "w.pt", "safetensors": "w.safetensors", "keras": "w.keras", "keras-weights": "w.weights.h5",
    "orbax": "w_orbax", "msgpack": "w.msgpack",
}
# Published by torchvision: resnet18's state_dict has 122 entries (20 BN layers, each with num_batches_tracked)
# and 11,689,512 parameters.
RESNET18_STATE_ENTRIES, RESNET18_BN_LAYERS, RESNET18_PARAMETERS = 122, 20, 11_689_512


def assert_identical(got: dict, want: dict, spec) -> None:
    """Bit for bit, on every canonical tensor."""
    for key in canonical_shapes(spec):
        assert got[key].dtype == want[key].dtype, key
        assert np.array_equal(got[key].view(np.uint8), np.ascontiguousarray(want[key]).view(np.uint8)), key


@pytest.fixture(scope="module")
def small_weights() -> dict:
    return randomize(SMALL, seed=7)


@pytest.fixture(scope="module")
def small_files(impls, small_weights, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("small")
    for name in NAMES.values():
        checkpoint.save(folder / name, small_weights, SMALL)
    return {fmt: folder / name for fmt, name in NAMES.items()}


@pytest.mark.parametrize("first,second", list(permutations(NAMES, 2)))
def test_every_format_pair_round_trips_bit_exact(small_files, small_weights, tmp_path, first, second):
    source = checkpoint.Source.open(small_files[first]).read()
    middle = tmp_path / NAMES[second]
    checkpoint.Destination.open(middle).write(source.weights, source.spec)
    source = checkpoint.Source.open(middle).read()
    end = tmp_path / f"back_{NAMES[first]}"
    checkpoint.Destination.open(end).write(source.weights, source.spec)
    back = checkpoint.Source.open(end).read()
    assert back.spec == SMALL
    assert_identical(back.weights, small_weights, SMALL)


@pytest.mark.parametrize("fmt", ["safetensors", "keras", "orbax"])
def test_formats_that_can_record_the_architecture_do(small_files, fmt):
    assert checkpoint.load(small_files[fmt])[1] == SMALL


@pytest.mark.parametrize("fmt", ["torch", "keras-weights", "msgpack"])
def test_formats_without_a_record_have_it_inferred(small_files, fmt):
    weights, spec = checkpoint.load(small_files[fmt])
    assert spec is None
    found = infer(weights)
    assert found.spec == SMALL
    assert found.overrides == {"stem_width": 8, "widths": (8, 16, 32, 64), "num_classes": 10}


# ----------------------------------------------------------------------------- each framework's own loader


@pytest.fixture(scope="module")
def resnet18(impls, tmp_path_factory) -> tuple[dict, dict[str, Path]]:
    weights = randomize(get_spec("resnet18"), seed=3)
    folder = tmp_path_factory.mktemp("resnet18")
    for name in NAMES.values():
        checkpoint.save(folder / name, weights, "resnet18")
    return weights, {fmt: folder / name for fmt, name in NAMES.items()}


def test_torch_file_is_a_torchvision_state_dict(resnet18, impls):
    import torch

    weights, files = resnet18
    state = torch.load(files["torch"], weights_only=True)
    assert len(state) == RESNET18_STATE_ENTRIES
    assert sum(k.endswith(".num_batches_tracked") for k in state) == RESNET18_BN_LAYERS
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(v.numel() for k, v in state.items() if not k.endswith(buffers))
    assert params == RESNET18_PARAMETERS
    model = impls["torch"].build_model("resnet18")
    model.load_state_dict(state, strict=True)
    assert_identical(impls["torch"].export_weights(model), weights, model.spec)


def test_safetensors_file_loads_strict_into_torch(resnet18, impls):
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights, files = resnet18
    model = impls["torch"].build_model("resnet18")
    model.load_state_dict(load_file(files["safetensors"]), strict=True)
    assert_identical(impls["torch"].export_weights(model), weights, model.spec)
    with safe_open(files["safetensors"], framework="np") as f:
        assert f.metadata()["format"] == "pt"  # what transformers and timm check


def test_keras_file_loads_with_keras_load_model(resnet18, impls):
    import keras

    weights, files = resnet18
    from tensorflow_impl import standalone

    model = keras.saving.load_model(files["keras"])  # Keras's own layers: no class of ours (tests/test_standalone.py)
    assert type(model).__module__.startswith("keras.") and model.name == "resnet18"
    assert_identical(standalone.export(model, get_spec("resnet18")), weights, get_spec("resnet18"))


def test_keras_weights_file_loads_with_load_weights(resnet18, impls):
    weights, files = resnet18
    model = impls["tf"].build_model("resnet18")
    model.load_weights(files["keras-weights"])
    assert_identical(impls["tf"].export_weights(model), weights, model.spec)


def test_orbax_directory_restores_into_nnx_state(resnet18, impls):
    import orbax.checkpoint as ocp
    from flax import nnx

    weights, files = resnet18
    graphdef, abstract = nnx.split(impls["jax"].checkpoint.empty_model(get_spec("resnet18")))
    state = ocp.StandardCheckpointer().restore(files["orbax"].absolute(), abstract)
    model = nnx.merge(graphdef, state)
    assert_identical(impls["jax"].export_weights(model), weights, model.spec)


def test_orbax_directory_is_what_orbax_writes_for_the_nnx_state(small_weights, impls, tmp_path):
    """Written from canonical weights without a model, the directory records the same tree, types and values
    as Orbax's own save of nnx.state(model)."""
    import orbax.checkpoint as ocp
    from flax import nnx

    model = impls["jax"].checkpoint.model_from_weights(SMALL, small_weights)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((tmp_path / "theirs").absolute(), nnx.state(model))
    checkpoint.save(tmp_path / "ours", small_weights, SMALL)
    ours, theirs = (json.loads((tmp_path / name / "_METADATA").read_text())["tree_metadata"] for name in ("ours", "theirs"))
    assert ours == theirs
    assert_identical(checkpoint.load(tmp_path / "theirs")[0], small_weights, SMALL)


def test_msgpack_file_restores_with_flax_serialization(resnet18, impls):
    from flax import nnx, serialization

    weights, files = resnet18
    graphdef, state = nnx.split(impls["jax"].checkpoint.empty_model(get_spec("resnet18")))
    pure = serialization.from_bytes(nnx.to_pure_dict(state), files["msgpack"].read_bytes())
    nnx.replace_by_pure_dict(state, pure)
    model = nnx.merge(graphdef, state)
    assert_identical(impls["jax"].export_weights(model), weights, model.spec)


def test_msgpack_is_what_flax_serialization_writes(small_weights, impls, tmp_path):
    from flax import nnx, serialization

    checkpoint.save(tmp_path / "w.safetensors", small_weights, SMALL)
    model = checkpoint.load_model("jax", tmp_path / "w.safetensors")
    flax_bytes = serialization.to_bytes(nnx.to_pure_dict(nnx.state(model)))
    checkpoint.save_model(model, tmp_path / "model.msgpack")
    assert (tmp_path / "model.msgpack").read_bytes() == flax_bytes
    # written from canonical weights, without a model: the same bytes
    checkpoint.save(tmp_path / "weights.msgpack", small_weights, SMALL)
    assert (tmp_path / "weights.msgpack").read_bytes() == flax_bytes


# ----------------------------------------------------------------------------- keras.applications files


@pytest.fixture(scope="module")
def kapp_resnet50(impls) -> tuple[object, dict]:
    """A keras.applications ResNet50 (10 classes) with every tensor randomised, and its canonical weights."""
    import keras

    spec = get_spec("keras_resnet50", num_classes=10)
    model = keras.applications.ResNet50(weights=None, classes=10)
    weights = randomize(spec, seed=5)
    impls["tf"].to_keras_applications(weights, model, spec)
    return model, weights


def test_keras2_h5_written_by_keras_is_read_by_name(kapp_resnet50, tmp_path):
    model, weights = kapp_resnet50
    path = tmp_path / "kapp.h5"
    model.save(path)  # a whole-model Keras 2 file (Keras logs that it is legacy): weights under 'model_weights'
    weights_back, spec = checkpoint.load(path)
    assert spec == get_spec("keras_resnet50", num_classes=10)
    assert_identical(weights_back, weights, spec)


@pytest.mark.parametrize("fmt,name", [("keras-h5", "out.h5"), ("keras-app", "out.weights.h5")])
def test_keras_applications_files_load_into_keras_applications(kapp_resnet50, impls, tmp_path, fmt, name):
    import keras

    _, weights = kapp_resnet50
    spec = get_spec("keras_resnet50", num_classes=10)
    checkpoint.save(tmp_path / name, weights, spec, fmt)
    fresh = keras.applications.ResNet50(weights=None, classes=10)
    fresh.load_weights(tmp_path / name)  # Keras 2 files load by layer position: the order must be Keras's
    assert_identical(impls["tf"].from_keras_applications(fresh, spec), weights, spec)
    weights_back, spec_back = checkpoint.load(tmp_path / name)
    assert spec_back == spec
    assert_identical(weights_back, weights, spec)


def test_keras_applications_weights_and_keras_files_are_read(kapp_resnet50, tmp_path):
    model, weights = kapp_resnet50
    spec = get_spec("keras_resnet50", num_classes=10)
    model.save_weights(tmp_path / "kapp.weights.h5")
    model.save(tmp_path / "kapp.keras")
    for name in ("kapp.weights.h5", "kapp.keras"):
        weights_back, spec_back = checkpoint.load(tmp_path / name)
        assert spec_back == spec, name
        assert_identical(weights_back, weights, spec)


def strip_layer_names(path: Path) -> Path:
    """What a Keras 3 from before layer names were recorded writes: the same groups, no 'name' attributes."""
    import h5py

    with h5py.File(path, "r+") as h5:
        groups = []
        h5.visititems(lambda name, obj: groups.append(obj) if "name" in obj.attrs else None)
        for group in groups:
            del group.attrs["name"]
    return path


def assert_read_only_by_position(path: Path, weights: dict, spec) -> None:
    """Refused without an architecture, bit-exact with one."""
    with pytest.raises(CheckpointError, match="records no layer names.*pass arch=NAME"):
        checkpoint.load(path)
    weights_back, spec_back = checkpoint.load(path, arch=spec)
    assert spec_back == spec
    assert_identical(weights_back, weights, spec)


def test_keras_applications_file_without_layer_names_is_read_by_position(kapp_resnet50, tmp_path):
    model, weights = kapp_resnet50
    spec = get_spec("keras_resnet50", num_classes=10)
    path = tmp_path / "old.weights.h5"
    model.save_weights(path)
    assert_read_only_by_position(strip_layer_names(path), weights, spec)


def test_keras_file_without_layer_names_is_read_by_position(small_files, small_weights, tmp_path):
    path = tmp_path / "old.weights.h5"
    path.write_bytes(small_files["keras-weights"].read_bytes())
    assert_read_only_by_position(strip_layer_names(path), small_weights, SMALL)
    # another architecture does not fit: Keras's own check (shapes, missing layers) says so in one line
    for other in (get_spec("resnet18"), get_spec("resnet34", stem_width=8, widths=(8, 16, 32, 64), num_classes=10)):
        with pytest.raises(CheckpointError, match="old.weights.h5"):
            checkpoint.load(path, arch=other)
    # Keras ignores layers a file has beyond the model's: the layer count catches a shallower architecture
    fewer = get_spec("resnet18", layers=(1, 1, 1, 1), stem_width=8, widths=(8, 16, 32, 64), num_classes=10)
    with pytest.raises(CheckpointError, match="holds variables of 41 layers, but resnet18 has 25"):
        checkpoint.load(path, arch=fewer)


def test_keras_model_file_without_layer_names_uses_its_config(small_files, small_weights, tmp_path):
    import zipfile

    with zipfile.ZipFile(small_files["keras"]) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    (tmp_path / "model.weights.h5").write_bytes(members["model.weights.h5"])
    members["model.weights.h5"] = strip_layer_names(tmp_path / "model.weights.h5").read_bytes()
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    weights_back, spec_back = checkpoint.load(tmp_path / "old.keras")
    assert spec_back == SMALL
    assert_identical(weights_back, small_weights, SMALL)


def test_keras_applications_v2_names_are_told_from_v1(impls, tmp_path):
    import keras

    spec = get_spec("keras_resnet50v2")
    model = keras.applications.ResNet50V2(weights=None)
    weights = randomize(spec, seed=6)
    impls["tf"].to_keras_applications(weights, model, spec)
    model.save_weights(tmp_path / "v2.weights.h5")
    weights_back, spec_back = checkpoint.load(tmp_path / "v2.weights.h5")
    assert spec_back == spec and spec_back.preact
    assert_identical(weights_back, weights, spec)


def test_notop_keras_applications_file_is_a_headless_backbone(impls, tmp_path):
    """include_top=False: keras.applications' backbone, read as num_classes=0 (the round trip and its features:
    tests/test_keras_applications.py, -m slow)."""
    import keras

    model = keras.applications.ResNet50(weights=None, include_top=False)
    model.save_weights(tmp_path / "notop.weights.h5")
    weights, spec = checkpoint.load(tmp_path / "notop.weights.h5")
    assert spec == get_spec("keras_resnet50", num_classes=0) and not any(k.startswith("fc.") for k in weights)
    assert_identical(weights, impls["tf"].from_keras_applications(model, spec), spec)


# ----------------------------------------------------------------------------- the Python API of each implementation


@pytest.mark.parametrize("framework", ["torch", "tf", "jax"])
def test_load_model_reads_any_format_into_any_framework(small_files, small_weights, impls, framework):
    for fmt, path in small_files.items():
        model = checkpoint.load_model(framework, path)
        assert model.spec == SMALL, fmt
        assert_identical(impls[framework].export_weights(model), small_weights, SMALL)


@pytest.mark.parametrize("framework,names", [
    ("torch", ["m.pt", "m.safetensors"]), ("tf", ["m.keras", "m.weights.h5"]), ("jax", ["m_orbax", "m.msgpack"]),
])
def test_save_model_writes_and_replaces(small_files, small_weights, tmp_path, framework, names):
    model = checkpoint.load_model(framework, small_files["safetensors"])
    for name in names:
        checkpoint.save_model(model, tmp_path / name)
        checkpoint.save_model(model, tmp_path / name)  # the API replaces, atomically
        weights, _ = checkpoint.load(tmp_path / name)
        assert_identical(weights, small_weights, SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary left behind


def test_load_model_with_arch_of_another_architecture_says_what_differs(small_files):
    with pytest.raises(CheckpointError, match=r"do not fit resnet34: .*missing .*the weights look like resnet18"):
        checkpoint.load_model("torch", small_files["torch"], arch="resnet34")


# ----------------------------------------------------------------------------- state_dict wrappers, d2l, dtypes


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}, "args": argparse.Namespace(lr=0.1, epochs=90)},  # torchvision's
    lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}},
])
def test_training_checkpoints_are_unwrapped(impls, small_weights, tmp_path, wrap):
    path = torch_save(wrap(as_torch(small_weights)), tmp_path / "ckpt.pth")
    weights, _ = checkpoint.load(path)
    assert_identical(weights, small_weights, SMALL)


def test_d2l_seed_state_dict_is_renamed(impls, tmp_path):
    spec = get_spec("d2l_resnet18")
    weights = randomize(spec, seed=2)
    # the seed's nn.Sequential numbering, written out by hand: b1 = 0 (conv, BN), b2..b5 = 1..4, Linear = 7
    d2l = {}
    for key, value in weights.items():
        key = key.replace("conv1.", "0.0.", 1) if key.startswith("conv1.") else key
        key = key.replace("bn1.", "0.1.", 1) if key.startswith("bn1.") else key
        key = key.replace(".downsample.0.", ".conv3.").replace("fc.", "7.", 1)
        for stage in range(1, 5):
            key = key.replace(f"layer{stage}.", f"{stage}.", 1) if key.startswith(f"layer{stage}.") else key
        d2l[key] = value
    assert "1.0.conv1.weight" in d2l and "2.0.conv3.weight" in d2l and "7.weight" in d2l
    path = torch_save(as_torch(d2l), tmp_path / "d2l.pt")
    source = checkpoint.Source.open(path, "d2l").read()
    assert source.spec == spec
    assert_identical(source.weights, weights, spec)


def test_d2l_format_refuses_other_state_dicts(small_files):
    with pytest.raises(CheckpointError, match="not a d2l seed state_dict"):
        checkpoint.Source.open(small_files["torch"], "d2l").read()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_becomes_float32_or_is_kept(impls, small_weights, tmp_path, dtype):
    import torch

    half = {k: v.to(getattr(torch, dtype)) for k, v in as_torch(small_weights).items()}
    path = torch_save(half, tmp_path / "half.pt")
    source = checkpoint.Source.open(path).read()
    spec = source.spec
    assert source.weights["conv1.weight"].dtype.name == dtype
    as32, notes = checkpoint.prepare(source.weights, spec, path)
    assert as32["conv1.weight"].dtype == np.float32 and "float32" in notes[0]
    for key, value in half.items():  # the upcast is exact: compare with torch's own
        assert np.array_equal(as32[key], value.float().numpy()), key
    kept, notes = checkpoint.prepare(source.weights, spec, path, keep_dtype=True)
    assert notes == []
    for name in ("k.safetensors", "k.pt", "k.weights.h5", "k_orbax", "k.msgpack"):
        checkpoint.Destination.open(tmp_path / name).write(kept, spec)
        assert_identical(checkpoint.load(tmp_path / name)[0], kept, spec)


def test_keep_dtype_refuses_a_target_that_cannot_store_it(small_weights, tmp_path):
    import ml_dtypes

    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in small_weights.items()}
    with pytest.raises(CheckpointError, match="cannot store bfloat16"):
        checkpoint.prepare(bf16, SMALL, tmp_path / "x", keep_dtype=True, target=checkpoint.FORMATS["keras-h5"])


def test_mixed_dtypes_cannot_be_kept(small_weights, tmp_path):
    mixed = {**small_weights, "fc.bias": small_weights["fc.bias"].astype(np.float16)}
    with pytest.raises(CheckpointError, match="mixed dtypes"):
        checkpoint.prepare(mixed, SMALL, tmp_path / "x", keep_dtype=True)
    assert checkpoint.prepare(mixed, SMALL, tmp_path / "x")[0]["fc.bias"].dtype == np.float32


def test_nonfinite_values_are_refused_unless_allowed(small_weights, tmp_path):
    broken = {**small_weights, "layer2.0.bn1.running_var": small_weights["layer2.0.bn1.running_var"].copy()}
    broken["layer2.0.bn1.running_var"][3] = np.inf
    with pytest.raises(CheckpointError, match=r"1 tensors hold NaN or Inf \(layer2.0.bn1.running_var\)"):
        checkpoint.prepare(broken, SMALL, tmp_path / "x")
    allowed, _ = checkpoint.prepare(broken, SMALL, tmp_path / "x", allow_nonfinite=True)
    assert allowed["layer2.0.bn1.running_var"][3] == np.inf


def test_integer_tensors_are_refused(small_weights, tmp_path):
    ints = {**small_weights, "fc.bias": np.zeros(10, dtype=np.int64)}
    with pytest.raises(CheckpointError, match="fc.bias holds int64 values"):
        checkpoint.prepare(ints, SMALL, tmp_path / "x")


# ----------------------------------------------------------------------------- the architecture a file records


def test_safetensors_metadata_names_the_preset_and_its_overrides(small_weights, tmp_path):
    from safetensors import safe_open

    checkpoint.save(tmp_path / "w.safetensors", small_weights, SMALL)
    with safe_open(tmp_path / "w.safetensors", framework="np") as f:
        meta = f.metadata()
    assert meta["resnet_parity.arch"] == "resnet18"
    assert json.loads(meta["resnet_parity.overrides"]) == {"stem_width": 8, "widths": [8, 16, 32, 64], "num_classes": 10}


def test_a_forged_architecture_record_is_refused(small_weights, tmp_path):
    from safetensors.numpy import save_file

    meta = {"resnet_parity.arch": "resnet18", "resnet_parity.overrides": json.dumps({"layers": [10**9] * 4})}
    save_file(small_weights, tmp_path / "forged.safetensors", metadata=meta)
    source = checkpoint.Source.open(tmp_path / "forged.safetensors")
    with pytest.raises(CheckpointError, match="4000000000 blocks, but holds only"):
        source.read()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_inferred_from_its_shapes(name):
    spec = PRESETS[name]
    shapes_only = {k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(spec).items()}
    found = infer(shapes_only)
    assert found.spec == spec and found.preset == name and found.overrides == {}


def test_inference_reports_overrides_and_what_the_weights_cannot_tell():
    spec = get_spec("resnet50", num_classes=10, in_channels=1, layers=(2, 2, 2, 2))
    found = infer({k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(spec).items()})
    assert found.preset == "resnet50" and found.spec == spec
    assert found.overrides == {"in_channels": 1, "layers": (2, 2, 2, 2), "num_classes": 10}
    assert found.assumed["stride_on"] == "3x3 (v1.5)"  # torchvision's, since nothing in the weights says v1


def test_conv_biases_point_to_the_keras_v1_lineage():
    spec = get_spec("resnet50", conv_bias="all", bn_eps=1.001e-5, stride_on="1x1", source="keras.applications (v1)")
    found = infer({k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(spec).items()})
    assert found.preset == "keras_resnet50" and found.assumed["stride_on"] == "1x1 (v1)"


def test_weights_that_are_not_a_resnet_are_named_as_such():
    with pytest.raises(ArchitectureError, match=r"not a ResNet state: no 4-d conv1.weight \(keys: encoder.weight"):
        infer({"encoder.weight": np.zeros((3, 3)), "fc.weight": np.zeros((2, 3))})


def test_extra_keys_match_no_preset_and_the_closest_are_named():
    weights = {k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(get_spec("resnet34")).items()}
    weights["layer1.0.extra.fc1.weight"] = np.zeros((4, 64))  # a block part no preset has
    with pytest.raises(ArchitectureError, match=r"match no preset: 0 missing, 1 unexpected.*layer1.0.extra.fc1.weight.*"
                                                 r"closest presets: resnet34 \(no field differs\); resnet18 \(layers"):
        infer(weights)


def test_presets_that_differ_only_where_weights_are_silent_make_inference_ambiguous(monkeypatch):
    # a v1 twin of torchvision's resnet50: identical shapes, stride on the 1x1
    twin = dataclasses.replace(PRESETS["resnet50"], name="resnet50_v1", stride_on="1x1")
    monkeypatch.setitem(PRESETS, "resnet50_v1", twin)
    weights = {k: np.broadcast_to(np.float32(0), s) for k, s in canonical_shapes(get_spec("resnet50")).items()}
    with pytest.raises(ArchitectureError, match="ambiguous: .*resnet50, resnet50_v1.* stride_on.*pass arch=NAME"):
        infer(weights)


# ----------------------------------------------------------------------------- atomic writes


def test_a_failing_writer_leaves_nothing_behind(small_weights, tmp_path, monkeypatch):
    def half_then_fail(path, weights, spec, fmt="safetensors", *, consume=False):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.safetensors, "write_weights", half_then_fail)
    with pytest.raises(CheckpointError, match=r"new.safetensors: cannot write safetensors \(canonical\): disk full"):
        checkpoint.save(tmp_path / "new.safetensors", small_weights, SMALL)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_file(small_weights, tmp_path, monkeypatch):
    checkpoint.save(tmp_path / "w.safetensors", small_weights, SMALL)
    before = (tmp_path / "w.safetensors").read_bytes()
    monkeypatch.setattr(checkpoint.safetensors, "write_weights", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(CheckpointError, match="boom"):
        checkpoint.save(tmp_path / "w.safetensors", small_weights, SMALL)
    assert (tmp_path / "w.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_an_orbax_directory_is_replaced_whole(small_files, small_weights, tmp_path, impls, monkeypatch):
    target = tmp_path / "ckpt"
    checkpoint.save(target, small_weights, SMALL)
    other = randomize(SMALL, seed=8)
    checkpoint.save(target, other, SMALL)
    assert_identical(checkpoint.load(target)[0], other, SMALL)
    # a writer that dies half-way through a directory leaves the old checkpoint as it was
    jax_checkpoint = impls["jax"].checkpoint

    def fail_midway(path, tree, spec):
        (path / "d").mkdir(parents=True)
        raise RuntimeError("killed")

    monkeypatch.setattr(jax_checkpoint, "write_orbax", fail_midway)
    with pytest.raises(CheckpointError, match="killed"):
        checkpoint.save(target, small_weights, SMALL)
    assert_identical(checkpoint.load(target)[0], other, SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
