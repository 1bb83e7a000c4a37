"""The checkpoint formats: one table row each, the module that reads and writes it, and which format a path is.

Every format is met by a module with ``read_weights`` and ``write_weights`` (``shared.contract.FileFormat``),
loaded and checked through ``shared.frameworks``' one loader when a file of that format is used: a framework's
``checkpoint.py`` for its own files (and the Flax ImageNet example's, which need JAX to read), a module of
``shared.libraries`` for another library's that need no framework, ``shared.checkpoint.safetensors`` for the
canonical file. A new format is one such module and one row of ``FORMATS``.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from .. import frameworks
from ..contract import FileFormat
from ..errors import CheckpointError
from ..preprocessing import FLAX_EXAMPLE, TIMM_RESNET, TORCHVISION, Preprocessing
from ..spec import ResNetSpec
from ..weights import NAMINGS

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
ONNX_OPSET = 18  # what torch's ONNX exporter (torchlib) writes natively


@dataclass(frozen=True)
class Format:
    """One checkpoint format: the module that reads and writes it, and how its files are named."""

    name: str
    label: str
    suffixes: tuple[str, ...] = ()
    framework: str | None = None  # the framework whose checkpoint module handles it (its own files need it)
    module: str | None = None  # else the framework-free module that does
    layout: Literal["file", "directory", "either"] = "file"
    naming: str | None = None  # the state_dict names (weights.NAMINGS) its files must have
    recognised: bool = False  # another library's: its config or names choose it whatever the suffix says
    readable: bool = True
    writable: bool = True
    dtypes: tuple[str, ...] = FLOAT_DTYPES
    # its writer takes preprocessing= and records it where the file has a place (returning notes that say what it did)
    keeps_preprocessing: bool = False
    # what its library documents for an ImageNet ResNet in a file that records no preprocessing
    documented_preprocessing: Preprocessing | None = None
    # it can hold a headless backbone (num_classes=0); the formats whose models always have a classifier cannot
    headless: bool = True


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("torch", "PyTorch state_dict", (".pt", ".pth", ".bin", ".pth.tar"), framework="torch",
               documented_preprocessing=TORCHVISION),
        Format("d2l", "d2l seed state_dict (PyTorch)", framework="torch", naming="d2l", writable=False),
        Format("safetensors", "safetensors (canonical)", (".safetensors",), module="shared.checkpoint.safetensors",
               keeps_preprocessing=True),
        Format("keras", "Keras 3 model", (".keras",), framework="tf"),
        Format("keras-weights", "Keras 3 weights", (".weights.h5",), framework="tf"),
        # keras.applications builds float32 models
        Format("keras-app", "keras.applications Keras 3 weights", framework="tf", dtypes=("float32",)),
        # Keras 2 never had bfloat16, and its loaders do not know Keras 3's bfloat16 marker
        Format("keras-h5", "Keras 2 HDF5 weights (keras.applications)", (".h5",), framework="tf",
               dtypes=("float16", "float32", "float64")),
        Format("orbax", "Orbax checkpoint of the Flax NNX state", framework="jax", layout="directory"),
        Format("msgpack", "Flax msgpack of the NNX state", (".msgpack",), framework="jax"),
        # other libraries' checkpoints
        Format("hf", "Hugging Face transformers ResNet (save_pretrained directory)", module="shared.libraries.hf",
               layout="either", naming="hf", recognised=True, keeps_preprocessing=True, headless=False),
        Format("timm", "timm ResNet state_dict (or save_for_hf directory)", module="shared.libraries.timm",
               layout="either", recognised=True, keeps_preprocessing=True, documented_preprocessing=TIMM_RESNET),
        Format("keras-hub", "keras-hub ResNet preset (save_to_preset directory)", module="shared.libraries.keras_hub",
               layout="either", recognised=True, keeps_preprocessing=True, headless=False),
        Format("flax-linen", "Flax ImageNet example variables (linen)", framework="jax", layout="either",
               documented_preprocessing=FLAX_EXAMPLE, headless=False),
        # the exporter folds BN into the convs: nothing to read back
        Format("onnx", f"ONNX graph (opset {ONNX_OPSET})", (".onnx",), framework="torch", readable=False,
               dtypes=("float32",)),
    ]
}


@dataclass
class Checkpoint:
    """What a format's reader found: canonical weights, the architecture if the file records one, notes for the user,
    and the preprocessing the file records (or its library documents for such files)."""

    weights: dict[str, np.ndarray]
    spec: ResNetSpec | None
    format: Format
    notes: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None


def file_format(fmt: Format) -> FileFormat:
    """The module that reads and writes ``fmt``, through the one checked loader (its framework imported only now)."""
    if fmt.framework is not None:
        return frameworks.load_checkpoints(fmt.framework)
    return frameworks.load_module(fmt.module, FileFormat)


def suffix_of(path: Path) -> str:
    """'.weights.h5' for Keras weight files and '.pth.tar' for timm's training checkpoints (their own suffixes),
    else the last suffix, lower-cased."""
    name = path.name.lower()
    return next((s for s in (".weights.h5", ".pth.tar") if name.endswith(s)), path.suffix.lower())


def detect_format(path: str | os.PathLike, fmt: str | None = None, *, writing: bool = False, option: str = "fmt") -> Format:
    """The format named by ``fmt``, else the one the path's suffix (or being a directory) implies.

    ``option`` is the caller's name for ``fmt``, for the message that asks for it."""
    path = Path(path)
    if fmt is not None:
        if fmt not in FORMATS:
            raise CheckpointError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return _usable(FORMATS[fmt], path, writing)
    suffix = suffix_of(path)
    # another library's files say so in their config or their names
    guess = None if writing or not path.exists() else sniff(path)
    if guess is not None and FORMATS[guess].recognised:
        return FORMATS[guess]
    # a directory, or a new path without a suffix, is an Orbax checkpoint
    if path.is_dir() or (writing and not suffix and not path.exists()):
        return FORMATS["orbax"]
    for found in FORMATS.values():
        if suffix in found.suffixes:
            return _usable(found, path, writing)
    if not writing and not path.exists():
        raise CheckpointError(f"{path}: no such file")
    hint = f"; it looks like {FORMATS[guess].label}" if guess else ""
    choices = ", ".join(n for n, f in FORMATS.items() if (f.writable if writing else f.readable))
    raise CheckpointError(f"{path}: unknown checkpoint suffix {suffix or '(none)'!r}{hint}; pass {option}=FORMAT ({choices})")


def _usable(found: Format, path: Path, writing: bool) -> Format:
    if writing and not found.writable:
        raise CheckpointError(f"{path}: {found.label} can be read but not written")
    if not writing and not found.readable:
        raise CheckpointError(f"{path}: {found.label} is written, not read (it holds a computation, not weights to "
                              "recover): convert from the checkpoint it was made from")
    return found


def sniff(path: Path) -> str | None:
    """The format a file's first bytes (a directory's config) suggest; None if nothing fits. A hint, except that
    another library's config or names choose its format when none is named."""
    try:
        if path.is_dir():
            if (path / "config.json").is_file():
                return library_of(json.loads((path / "config.json").read_text()))
            return "orbax" if (path / "_CHECKPOINT_METADATA").exists() or (path / "_METADATA").exists() else None
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith(b"\x89HDF\r\n\x1a\n"):
            import h5py

            with h5py.File(path, "r") as h5:
                # a keras-hub ImageClassifier saves its backbone as a nested model
                return "keras-hub" if "layers/res_net_backbone" in h5 else "keras-weights"
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            if "config.json" in names:
                return "keras"
            return "torch" if any(n.endswith("data.pkl") for n in names) else None
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5: torch's legacy format
            return "torch"
        if len(head) >= 9 and head[8:9] == b"{" and (end := 8 + struct.unpack("<Q", head[:8])[0]) <= size:
            with open(path, "rb") as f:
                keys = json.loads(f.read(end)[8:]) if end <= 1 << 24 else {}
            return "hf" if NAMINGS["hf"].recognises(keys) else "safetensors"
        if head and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):  # a msgpack map
            return "msgpack"
    except Exception:  # a hint only: a file too broken to guess at gets none
        return None
    return None


def library_of(config: Mapping) -> str | None:
    """The library whose config.json this is: Hugging Face (any model type), keras-hub or timm; None if none."""
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("model_type"), str):
        return "hf"
    if str(config.get("registered_name", "")).startswith("keras_hub>"):
        return "keras-hub"
    return "timm" if isinstance(config.get("architecture"), str) else None
