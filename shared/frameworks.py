"""Lazy access to the three implementations by short name; imports a framework only when asked."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType

# short name -> (implementation package, the framework it needs)
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("pytorch_impl", "torch"),
    "tf": ("tensorflow_impl", "tensorflow"),
    "jax": ("jax_impl", "flax"),
}
ALIASES = {"pytorch": "torch", "tensorflow": "tf", "keras": "tf", "flax": "jax"}
LABELS = {"torch": "PyTorch", "tf": "Keras/TF", "jax": "Flax NNX"}


def canonical_name(name: str) -> str:
    """'pytorch' -> 'torch', 'keras' -> 'tf', 'flax' -> 'jax'; ValueError for anything else."""
    name = ALIASES.get(name.lower(), name.lower())
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    return name


def installed() -> list[str]:
    """Short names of the frameworks importable here, without importing them."""
    return [name for name, (_, dist) in FRAMEWORKS.items() if importlib.util.find_spec(dist) is not None]


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ libraries print on fd 2 (TensorFlow's CUDA and oneDNN notices); RESNET_PARITY_DEBUG=1 keeps it."""
    if os.environ.get("RESNET_PARITY_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load(name: str) -> ModuleType:
    """The implementation package for a framework short name (imported once)."""
    package, dist = FRAMEWORKS[canonical_name(name)]
    if package in sys.modules:
        return sys.modules[package]
    if importlib.util.find_spec(dist) is None:
        raise ModuleNotFoundError(f"{LABELS[canonical_name(name)]} needs the '{dist}' package: pip install 'resnet-parity[{canonical_name(name)}]'")
    return importlib.import_module(package)
