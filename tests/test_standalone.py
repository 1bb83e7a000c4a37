"""Files that stand on their own: every format we write loads with its own library alone, in a fresh ``python -I``
process outside the checkout that never imports this package (tests/standalone_loader.py refuses the import), and
computes what our model computes (the formats that hold a computation) or holds our weights (Flax's state trees)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import random_images
from shared import checkpoint, frameworks
from shared.parity import FIXED_FLOAT32
from shared.spec import get_spec
from shared.weights import canonical_layers, from_canonical, randomize, relative_error

LOADER = Path(__file__).with_name("standalone_loader.py")
# torchvision's, timm's and keras.applications' constructors take only their own widths and depths
RESNET18 = get_spec("resnet18", num_classes=10)
KERAS_V1 = get_spec("keras_resnet50", num_classes=10)
NARROW = dict(layers=(1, 1), widths=(16, 32), strides=(1, 2), stem_width=16, num_classes=10)
# a .keras file of each structure the spec describes: deep stem and ResNet-D's pooled shortcut with ECA, SE, pre-activation
# with a zero-padded max-pool (keras.applications V2) and with -inf padding (keras-hub), option A's zero channels, TF
# 'same' padding without BN, grouped convs in a headless backbone
KERAS_SPECS = {
    "ecaresnet50t": get_spec("ecaresnet50t", **NARROW),
    "seresnet50": get_spec("seresnet50", **NARROW),
    "keras_resnet50v2": get_spec("keras_resnet50v2", **{**NARROW, "layers": (1, 2), "strides": (2, 1)}),
    "keras_hub_resnet50v2": get_spec("keras_hub_resnet50v2", **NARROW),
    "resnet20": get_spec("resnet20", layers=(1, 1, 1)),
    "seed_tf_cifar": get_spec("seed_tf_cifar", layers=(1, 1, 1)),
    "resnext50_32x4d": get_spec("resnext50_32x4d", **{**NARROW, "num_classes": 0}),
}
SMALL = KERAS_SPECS["seresnet50"]  # for the formats whose readers take any ResNet
# (key, format, file name, spec, the library's name for the model)
OWN_FILES = [
    ("torch", "torch", "w.pt", RESNET18, "resnet18"),
    ("safetensors", "safetensors", "w.safetensors", RESNET18, "resnet18"),
    ("onnx", "onnx", "w.onnx", SMALL, None),
    ("msgpack", "msgpack", "w.msgpack", SMALL, None),
    ("orbax", "orbax", "w_orbax", SMALL, None),
    *((name, "keras", f"{name}.keras", spec, None) for name, spec in KERAS_SPECS.items()),
]
LIBRARY_FILES = [
    ("timm", "timm", "timm_dir", RESNET18, "resnet18"),
    ("hf", "hf", "hf_dir", RESNET18, None),
    ("keras-hub", "keras-hub", "keras_hub_dir", RESNET18, None),
    ("keras-app", "keras-app", "w_app.weights.h5", KERAS_V1, "ResNet50"),
]


def load_alone(tmp_path: Path, entries: list[dict], x: np.ndarray) -> subprocess.CompletedProcess:
    """Run tests/standalone_loader.py on ``entries`` in a fresh isolated process (no PYTHONPATH, its working
    directory outside the checkout)."""
    work = tmp_path / "alone"
    work.mkdir()
    np.save(work / "inputs.npy", x)
    (work / "manifest.json").write_text(json.dumps(entries))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, "-I", str(LOADER), str(work / "manifest.json")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


def run_alone(tmp_path: Path, entries: list[dict], x: np.ndarray) -> dict:
    """What tests/standalone_loader.py computes from ``entries``, alone."""
    done = load_alone(tmp_path, entries, x)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "alone" / "outputs.npz") as found:
        return dict(found)


def our_outputs(spec, weights: dict, x: np.ndarray) -> np.ndarray:
    """Our PyTorch model's logits (a headless backbone's pooled features)."""
    model = frameworks.load_checkpoints("torch").model_from_weights(spec, weights)
    return frameworks.load("torch").features(model, x)["fc"]


def assert_load_alone(tmp_path: Path, files: list[tuple]) -> None:
    """Write each file, load them all with their own libraries alone, and check what each computes or holds."""
    from jax_impl.weights import PARAMS as JAX_PARAMS

    weights = {spec: randomize(spec, seed=31 + i) for i, spec in enumerate(dict.fromkeys(f[3] for f in files))}
    entries = []
    for key, fmt, name, spec, arch in files:
        checkpoint.save(tmp_path / name, weights[spec], spec, fmt=fmt)
        entries.append({"key": key, "format": fmt, "path": str(tmp_path / name), "arch": arch,
                        "num_classes": spec.num_classes})
    x = random_images(get_spec("resnet20"), size=32, batch=2)
    found = run_alone(tmp_path, entries, x)
    for key, fmt, _, spec, _ in files:
        if fmt in ("msgpack", "orbax"):  # a state tree: Flax alone has no model to run it, so compare what it holds
            for layer in canonical_layers(spec):
                for param in layer.shapes:
                    attr, perm = JAX_PARAMS[layer.kind][param]
                    # Orbax saves nnx.state(model), whose Variables are {'value': array}
                    leaf = found[f"{key}:{layer.path.replace('.', '/')}/{attr}{'/value' if fmt == 'orbax' else ''}"]
                    assert np.array_equal(leaf, from_canonical(weights[spec][f"{layer.path}.{param}"], perm)), (key, layer)
            continue
        got, expected = found[f"{key}:logits"], our_outputs(spec, weights[spec], x)
        assert got.shape == (2, spec.num_classes or spec.final_width), key
        assert relative_error(got, expected) <= FIXED_FLOAT32, (key, relative_error(got, expected))


def test_our_files_load_with_their_own_library_alone(tmp_path, impls):
    """.keras with keras.models.load_model, .pt and .safetensors into torchvision (strict), ONNX in onnxruntime,
    msgpack and Orbax with Flax and Orbax."""
    assert_load_alone(tmp_path, OWN_FILES)


def test_a_file_of_our_keras_subclass_does_not_load_alone(tmp_path, impls):
    """The check can fail: a .keras of tensorflow_impl's ResNet (what .keras files held before) needs our classes,
    which the isolated process refuses to import, so Keras cannot rebuild it."""
    spec = KERAS_SPECS["resnet20"]
    impls["tf"].build_model(spec).save(tmp_path / "subclass.keras")
    entry = {"key": "subclass", "format": "keras", "path": str(tmp_path / "subclass.keras"), "arch": None,
             "num_classes": spec.num_classes}
    done = load_alone(tmp_path, [entry], random_images(spec, batch=2))
    assert done.returncode != 0 and "Could not locate class 'ResNet'" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_other_libraries_files_load_with_that_library_alone(tmp_path, impls):
    """timm's checkpoint_path loader, transformers' from_pretrained, keras-hub's from_preset and keras.applications'
    weights=FILE (in-process they are checked in tests/test_libraries.py and tests/test_keras_applications.py)."""
    assert_load_alone(tmp_path, LIBRARY_FILES)
