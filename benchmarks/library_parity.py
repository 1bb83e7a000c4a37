"""Other libraries' ResNet-50s against ours, both ways, at full size: the logits' relative error max|a-b|/max|b|.

For each source the library builds its model (every tensor random, BN statistics included) and saves it as it
does. library -> ours: each of our frameworks loads that file (``checkpoint.load_model``) and runs the batch, against
the library's logits. ours -> library: the canonical weights are written back in the library's format and run by
the library, against each of our frameworks' logits. ONNX: our PyTorch model exported and run by onnxruntime.
Seed 001's network is read only. The libraries' model code comes from the tests (``tests/library_models.py``,
``tests/flax_imagenet_example.py``, ``tests/seed_torch_networks.py``).

    python benchmarks/library_parity.py [--size 224] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from pytorch_impl.references import install_torchvision_shim
from shared import checkpoint, frameworks
from shared.convert import convert, onnx_logits
from shared.spec import get_spec
from shared.weights import randomize, relative_error

from library_models import flax_variables, keras_hub_classifier, randomized

FRAMEWORKS = list(frameworks.FRAMEWORKS)
KERAS_HUB_50 = dict(stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
                    stackwise_num_strides=[1, 2, 2, 2])


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    return getattr(out, "logits", out).numpy()


def hf(folder: Path, x: np.ndarray, **config):
    from transformers import ResNetConfig, ResNetForImageClassification

    model = randomized(ResNetForImageClassification(ResNetConfig(num_labels=1000, **config)))
    model.save_pretrained(folder)
    return folder, torch_logits(model, x), lambda path: torch_logits(ResNetForImageClassification.from_pretrained(path), x)


def timm_resnet50d(folder: Path, x: np.ndarray):
    import timm
    from timm.models._hub import save_for_hf

    model = randomized(timm.create_model("resnet50d"))
    save_for_hf(model, folder, safe_serialization=True)

    def back(path):
        again = timm.create_model("resnet50d")
        timm.models.load_checkpoint(again, str(path), strict=True)
        return torch_logits(again.eval(), x)

    return folder, torch_logits(model, x), back


def keras_hub_resnet50(folder: Path, x: np.ndarray, **backbone):
    import keras_hub

    model = keras_hub_classifier(keras_hub, num_classes=1000, **KERAS_HUB_50, **backbone)
    model.save_to_preset(str(folder))
    back = lambda path: np.asarray(keras_hub.models.ResNetImageClassifier.from_preset(str(path))(x, training=False))  # noqa: E731
    return folder, np.asarray(model(x, training=False)), back


def flax_example(folder: Path, x: np.ndarray):
    from flax import serialization

    from flax_imagenet_example import BottleneckResNetBlock, ResNet

    model = ResNet(stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock, num_classes=1000)
    variables = flax_variables(model, x)
    path = folder.with_suffix(".msgpack")
    path.write_bytes(serialization.to_bytes(variables))
    back = lambda p: np.asarray(model.apply(serialization.from_bytes(variables, p.read_bytes()), x))  # noqa: E731
    return path, np.asarray(model.apply(variables, x)), back


def seed_torch(folder: Path, x: np.ndarray):
    import torch

    from seed_torch_networks import seed_torch_net

    net = seed_torch_net("seed_torch_resnet50")
    path = folder.with_suffix(".pt")
    torch.save(net.state_dict(), path)
    return path, torch_logits(net, x), None


SOURCES = {  # label -> (make, format to write back in, or None: read only)
    "Hugging Face resnet-50 (v1.5)": (hf, "hf", {}),
    "Hugging Face resnet-50, downsample_in_bottleneck (v1)": (hf, "hf", {"downsample_in_bottleneck": True}),
    "timm resnet50d": (timm_resnet50d, "timm", {}),
    "keras-hub resnet_50 (v1)": (keras_hub_resnet50, "keras-hub", {"input_conv_filters": [64], "input_conv_kernel_sizes": [7],
                                                           "block_type": "bottleneck_block"}),
    "keras-hub resnet_v2_50": (keras_hub_resnet50, "keras-hub", {"input_conv_filters": [64], "input_conv_kernel_sizes": [7],
                                                         "block_type": "bottleneck_block", "use_pre_activation": True}),
    "keras-hub resnet_vd_50": (keras_hub_resnet50, "keras-hub", {"input_conv_filters": [32, 32, 64],
                                                         "input_conv_kernel_sizes": [3, 3, 3],
                                                         "block_type": "bottleneck_block_vd"}),
    "Flax ImageNet example ResNet50": (flax_example, "flax-linen", {}),
    "seed 001 PyTorch Resnet50": (seed_torch, None, {}),
}


def measure(label: str, folder: Path, x: np.ndarray) -> dict:
    make, fmt, kw = SOURCES[label]
    path, reference, back = make(folder / "source", x, **kw)
    row = {"source": label, "file": checkpoint.Source.open(path).format.name}
    ours = {}
    for name in FRAMEWORKS:
        ours[name] = frameworks.load(name).features(checkpoint.load_model(name, path), x)["fc"]
        row[f"to {name}"] = relative_error(ours[name], reference)
    if fmt is not None:
        weights, spec = checkpoint.load(path)
        written = folder / {"flax-linen": "back.msgpack", "timm": "back.safetensors"}.get(fmt, "back")
        checkpoint.Destination.open(written, fmt).write(weights, spec)
        library = back(written)
        for name in FRAMEWORKS:
            row[f"from {name}"] = relative_error(library, ours[name])
    return row


def measure_onnx(folder: Path, x: np.ndarray) -> dict:
    source = folder / "resnet50.safetensors"
    spec = get_spec("resnet50")
    weights = randomize(spec, seed=0)
    checkpoint.save(source, weights, spec)
    convert(source, folder / "resnet50.onnx")
    torch_model = frameworks.load_checkpoints("torch").model_from_weights(spec, weights)
    reference = frameworks.load("torch").features(torch_model, x)["fc"]
    return {"source": f"ONNX (opset {checkpoint.ONNX_OPSET}) of our resnet50", "file": "onnx",
            "from torch": relative_error(onnx_logits(folder / "resnet50.onnx", x), reference)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width (batch 2)")
    parser.add_argument("--markdown", action="store_true", help="also print the rows as a markdown table")
    args = parser.parse_args()
    install_torchvision_shim()
    x = np.random.default_rng(0).standard_normal((2, args.size, args.size, 3)).astype(np.float32)
    rows = []
    with frameworks.quiet_native_stderr():
        for label in SOURCES:
            with tempfile.TemporaryDirectory() as folder:
                rows.append(measure(label, Path(folder), x))
            print(rows[-1], flush=True)
        with tempfile.TemporaryDirectory() as folder:
            rows.append(measure_onnx(Path(folder), x))
        print(rows[-1], flush=True)
    if args.markdown:
        columns = [f"{d} {f}" for d in ("to", "from") for f in FRAMEWORKS]
        labels = {f"{d} {f}": f"{'library -> ' if d == 'to' else ''}{frameworks.LABELS[f]}"
                  f"{' -> library' if d == 'from' else ''}" for d in ("to", "from") for f in FRAMEWORKS}
        print("| source | " + " | ".join(labels[c] for c in columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for row in rows:
            print(f"| {row['source']} | " + " | ".join(f"{row[c]:.1e}" if c in row else "-" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
