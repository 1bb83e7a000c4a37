"""PyTorch checkpoint files: state_dicts (.pt/.pth/.bin, other libraries' names too) <-> canonical weights, ONNX
graphs exported from the model (written only: the exporter folds BN into the convs); models from weights.

Files are read with ``torch.load(weights_only=True)`` only: a pickle that asks for anything but
tensors and plain containers is refused before any of it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from shared.checkpoint import FORMATS, ONNX_OPSET, Checkpoint, CheckpointError, dtype_of, sniff
from shared.errors import FrameworkUnavailable, one_line
from shared.spec import ResNetSpec
from shared.weights import IGNORED_SUFFIXES, canonical_layers

from .resnet import ResNet, build_model
from .weights import export_weights, import_weights

# Where training scripts put the state_dict: {"state_dict": ...} (Lightning, timm), the PyTorch tutorial's
# {"model_state_dict": ...}, {"model": ...} (torchvision's references). Prefixes on the keys (DDP's module.,
# torch.compile's _orig_mod., ...) are shared.checkpoint's to remove, whatever the format.
WRAPPERS = ("state_dict", "model_state_dict", "model")


def read_weights(path: Path, fmt: str, spec: ResNetSpec | None = None) -> Checkpoint:
    """A torch.save'd state_dict, unwrapped, as numpy under its own names; no code in the file runs."""
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive; before PyTorch 1.6, a pickle (protocol 2 to 5)
    pickled = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if not (head.startswith(b"PK\x03\x04") or pickled):
        guess = sniff(path)
        what = f"it looks like {FORMATS[guess].label}" if guess else (
            "it is text" if head.isascii() and head.decode("ascii").isprintable() else f"it starts with {head!r}")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive or a pickle); {what}")
    try:
        # torchvision's reference scripts save their argparse.Namespace beside the weights: plain values
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter("ignore")  # pickle-protocol notices; a refusal raises below
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if found := re.search(r"GLOBAL (\S+)", str(exc)):
            raise CheckpointError(
                f"{path}: refused: its pickle asks for {found[1]}, which weights-only loading does not allow, and "
                "nothing in the file was run (a state_dict holds only tensors: save model.state_dict())"
            ) from exc
        detail = re.search(r"Unsupported[^\n]*", str(exc))  # the line that says what stopped the unpickler
        raise ValueError(f"weights-only unpickling stopped: {detail[0] if detail else one_line(exc)}") from exc
    state, notes = _unwrap(obj, path)
    weights = {key: _to_numpy(value) for key, value in state.items()}
    return Checkpoint(weights, None, FORMATS[fmt], notes)


def _unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state_dict inside a training checkpoint."""
    notes = []
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                notes.append(f"took the weights from the checkpoint's {key!r} entry")
                break
        else:
            raise CheckpointError(f"{path}: a dict of {', '.join(map(str, list(obj)[:4]))}, with no state_dict "
                                  f"at the top or under {', '.join(WRAPPERS)}")
    if not obj:
        raise CheckpointError(f"{path}: the state_dict is empty")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(bad[:3])}")
    return obj, notes


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes  # numpy has no bfloat16 of its own; reinterpret the bits

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only arrays (from safetensors, JAX): torch.save only reads them
        if array.dtype.name == "bfloat16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)


def write_weights(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str, *, consume: bool = False,
) -> None:
    """A plain state_dict in torchvision's order, num_batches_tracked included, so load_state_dict(strict=True) takes it;
    or an ONNX graph of the model.

    The tensors share memory with the canonical arrays (same layout), so ``consume`` changes nothing.
    """
    if fmt == "onnx":
        write_onnx(path, model_from_weights(spec, weights, dtype_of(weights, spec)))
        return
    state = {}
    for layer in canonical_layers(spec):
        for param in layer.shapes:
            state[f"{layer.path}.{param}"] = _to_tensor(weights[f"{layer.path}.{param}"])
        if layer.kind == "bn":
            key = f"{layer.path}.num_batches_tracked"
            state[key] = torch.tensor(int(np.asarray(weights.get(key, 0))), dtype=torch.long)
    torch.save(state, path)


def write_onnx(path: Path, model: ResNet) -> None:
    """The eval-mode graph in one file at opset ``ONNX_OPSET``, NCHW input 'x' of any batch and size, output 'logits'."""
    try:
        import onnx  # noqa: F401  (the exporter's dependencies; without them the error would come from deep inside torch)
        import onnxscript  # noqa: F401
    except ModuleNotFoundError as exc:
        raise FrameworkUnavailable(f"writing ONNX needs {exc.name}: pip install 'resnet-parity[onnx]'") from exc

    spec = model.spec
    x = torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size, dtype=next(model.parameters()).dtype)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=2), 3: torch.export.Dim("width", min=2)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter reports its progress and its drafts
        torch.onnx.export(model.eval(), (x,), str(path), input_names=["x"], output_names=["logits"], dynamo=True,
                          opset_version=ONNX_OPSET, dynamic_shapes=(dims,), external_data=False)


def empty_model(spec: ResNetSpec, dtype: str = "float32") -> ResNet:
    """A model with allocated but uninitialised tensors, for a checkpoint to overwrite (no random init)."""
    device = torch.get_default_device()  # where the caller builds (see numerics)
    with torch.device("meta"):
        model = build_model(spec, dtype=dtype)
    model = model.to_empty(device=device)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.num_batches_tracked.zero_()  # a buffer that checkpoints without it never overwrite
    return model


def model_from_weights(spec: ResNetSpec, weights: Mapping[str, np.ndarray], dtype: str = "float32") -> ResNet:
    """A model holding canonical ``weights`` (of ``dtype``), built without random init."""
    model = empty_model(spec, dtype)
    import_weights(model, weights)
    return model


def weights_to_save(model: ResNet) -> dict[str, np.ndarray]:
    """The canonical weights and the BN layers' num_batches_tracked, as the model's state_dict holds them."""
    counters = {k: v.numpy() for k, v in model.state_dict().items() if k.endswith(IGNORED_SUFFIXES)}
    return {**export_weights(model), **counters}
