"""Run by tests/test_standalone.py in a fresh ``python -I`` process: load each file we wrote with its own library alone
(never this package: importing any module of ours raises) and save what each computes, or holds, to outputs.npz.

Usage: python -I standalone_loader.py MANIFEST.json  (a list of {"key", "format", "path", "arch", "num_classes"}; the
input batch, NHWC, is inputs.npy beside the manifest; outputs are saved as KEY:logits, or KEY:a/b/c for a state tree)
"""

import importlib.abc
import json
import sys
from pathlib import Path

OURS = ("shared", "pytorch_impl", "tensorflow_impl", "jax_impl")


class RefuseOurs(importlib.abc.MetaPathFinder):
    """The editable install would find our packages: make any import of them fail loudly instead."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OURS:
            raise ImportError(f"{name}: this process loads files with their own libraries, never resnet-parity")
        return None


sys.meta_path.insert(0, RefuseOurs())

import numpy as np  # noqa: E402


def torchvision_models():
    import torch

    try:  # the CPU torch has no torchvision C++ ops; their schemas are enough for the models (GUIDE §8)
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        torchvision_models.keep = lib
    import torchvision.models

    return torchvision.models


def run_torch(net, x):
    import torch

    with torch.no_grad():
        return net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


def flat(tree, prefix=""):
    """A nested dict (lists as numbered keys) as 'a/b/c' -> array."""
    out = {}
    for key, value in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        path = f"{prefix}{key}"
        if isinstance(value, (dict, list, tuple)):
            out.update(flat(value, path + "/"))
        else:
            out[path] = np.asarray(value)
    return out


def load(entry, x):
    fmt, path, arch, classes = entry["format"], Path(entry["path"]), entry["arch"], entry["num_classes"]
    if fmt in ("torch", "safetensors"):
        import torch
        from safetensors.torch import load_file

        net = getattr(torchvision_models(), arch)(num_classes=classes)
        state = torch.load(path, weights_only=True) if fmt == "torch" else load_file(path)
        net.load_state_dict(state, strict=True)
        return {"logits": run_torch(net, x)}
    if fmt == "timm":
        torchvision_models()
        import timm

        net = timm.create_model(arch, num_classes=classes, checkpoint_path=str(path / "model.safetensors"))
        return {"logits": run_torch(net, x)}
    if fmt == "hf":
        torchvision_models()
        import torch
        import transformers

        net = transformers.ResNetForImageClassification.from_pretrained(path)
        with torch.no_grad():
            return {"logits": net.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()}
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return {"logits": session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2).copy()})[0]}
    if fmt == "keras":
        import keras

        return {"logits": np.asarray(keras.models.load_model(path)(x))}
    if fmt == "keras-app":
        import keras

        model = getattr(keras.applications, arch)(weights=str(path), classes=classes, classifier_activation=None,
                                                  input_shape=x.shape[1:])
        return {"logits": np.asarray(model(x))}
    if fmt == "keras-hub":
        import keras_hub

        return {"logits": np.asarray(keras_hub.models.ImageClassifier.from_preset(str(path))(x))}
    if fmt == "msgpack":
        from flax import serialization

        return flat(serialization.msgpack_restore(path.read_bytes()))
    if fmt == "orbax":
        import orbax.checkpoint as ocp

        return flat(ocp.StandardCheckpointer().restore(path.absolute()))
    raise ValueError(f"no loader for {fmt}")


def main(manifest: Path) -> None:
    x = np.load(manifest.parent / "inputs.npy")
    out = {}
    for entry in json.loads(manifest.read_text()):
        out.update({f"{entry['key']}:{k}": v for k, v in load(entry, x).items()})
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in OURS)
    if leaked:
        raise SystemExit(f"imported: {', '.join(leaked)}")
    np.savez(manifest.parent / "outputs.npz", **out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
