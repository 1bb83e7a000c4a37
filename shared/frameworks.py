"""The one way to reach a framework, or any module found by name: its implementation package, checkpoint backend,
trainer, data-parallel engine, benchmark hooks and reference models, and the checkpoint formats' modules, loaded
lazily.

A framework is imported only when one of these is asked for; each module is checked against its
Protocol in ``shared.contract`` when first loaded (``load_module``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass

from .contract import Bench, CheckpointBackend, DataParallel, Implementation, References, Trainer, missing_members
from .errors import FrameworkUnavailable, ResNetParityError


@dataclass(frozen=True)
class Framework:
    name: str  # the short name used everywhere: "torch", "tf", "jax"
    label: str  # for people: "PyTorch"
    package: str  # the implementation package
    requires: str  # the distribution it imports, and the extra that installs it
    distributions: tuple[str, ...]  # the packages whose versions a report records
    replica: str  # what one data-parallel replica is: a "process" (DDP) or a "device" of one process


FRAMEWORKS: dict[str, Framework] = {
    f.name: f
    for f in [
        Framework("torch", "PyTorch", "pytorch_impl", "torch", ("torch",), "process"),
        Framework("tf", "Keras/TF", "tensorflow_impl", "tensorflow", ("tensorflow", "keras"), "device"),
        Framework("jax", "Flax NNX", "jax_impl", "flax", ("jax", "jaxlib", "flax"), "device"),
    ]
}
ALIASES = {"pytorch": "torch", "tensorflow": "tf", "keras": "tf", "flax": "jax"}
LABELS = {name: f.label for name, f in FRAMEWORKS.items()}


def canonical_name(name: str) -> str:
    """'pytorch' -> 'torch', 'keras' -> 'tf', 'flax' -> 'jax'; ResNetParityError for anything else."""
    name = ALIASES.get(name.lower(), name.lower())
    if name not in FRAMEWORKS:
        raise ResNetParityError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    return name


def installed() -> list[str]:
    """Short names of the frameworks importable here, without importing them."""
    return [name for name, f in FRAMEWORKS.items() if importlib.util.find_spec(f.requires) is not None]


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what C++ libraries print on fd 2 (TensorFlow's CUDA notices); RESNET_PARITY_DEBUG=1 keeps it."""
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


def load_module(module_name: str, protocol: type, framework: Framework | None = None):
    """The one loader: ``module_name`` imported once (``framework``'s package checked to be installed first) and
    checked against ``protocol``; a module that lacks a member is a TypeError, a bug in that module."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    if framework is not None and importlib.util.find_spec(framework.requires) is None:
        raise FrameworkUnavailable(
            f"{framework.label} needs the '{framework.requires}' package: pip install 'resnet-parity[{framework.name}]'")
    with quiet_native_stderr():
        module = importlib.import_module(module_name)
    implementer = getattr(module, protocol.__name__) if protocol is DataParallel else module
    if missing := missing_members(implementer, protocol):
        raise TypeError(f"{module_name} does not implement {protocol.__name__}: missing {', '.join(missing)}")
    return module


def _load(name: str, submodule: str, protocol: type):
    framework = FRAMEWORKS[canonical_name(name)]
    return load_module(f"{framework.package}.{submodule}" if submodule else framework.package, protocol, framework)


def load(name: str) -> Implementation:
    """The implementation package of a framework (``pytorch_impl``): models and weights."""
    return _load(name, "", Implementation)


def load_checkpoints(name: str) -> CheckpointBackend:
    """A framework's checkpoint backend (``pytorch_impl.checkpoint``): its own file formats, and models from weights."""
    return _load(name, "checkpoint", CheckpointBackend)


def load_trainer(name: str) -> Trainer:
    """A framework's trainer (``pytorch_impl.train``): the training step in its idiom."""
    return _load(name, "train", Trainer)


def load_parallel(name: str):
    """A framework's data-parallel module (``pytorch_impl.parallel``); its ``DataParallel`` is the engine."""
    return _load(name, "parallel", DataParallel)


def load_bench(name: str) -> Bench:
    """A framework's benchmark hooks (``pytorch_impl.bench``): our model's step, timed as ``shared.bench`` times it."""
    return _load(name, "bench", Bench)


def load_references(name: str) -> References | None:
    """A framework's reference models for ``bench`` (``pytorch_impl.references``): an optional module, None where
    this installation has none."""
    framework = FRAMEWORKS[canonical_name(name)]
    module_name = f"{framework.package}.references"
    if module_name not in sys.modules:
        load(name)  # looking for a submodule imports its package: the framework's installation is checked first
        if importlib.util.find_spec(module_name) is None:
            return None
    return _load(name, "references", References)


def framework_of(model: object) -> str:
    """The short name of the framework whose package defines ``model``'s class (or a class it derives from)."""
    packages = {f.package: name for name, f in FRAMEWORKS.items()}
    for cls in type(model).__mro__:
        if (name := packages.get(cls.__module__.split(".")[0])) is not None:
            return name
    raise ResNetParityError(f"a {type(model).__name__} is none of our models ({', '.join(packages)}); "
                            "export its weights and write them with shared.checkpoint.save")


def versions(names: list[str]) -> dict[str, dict[str, str]]:
    """Each framework's packages and their installed versions, for a report."""
    out = {}
    for name in names:
        out[name] = {}
        for dist in FRAMEWORKS[name].distributions:
            try:
                out[name][dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[name][dist] = "not installed"
    return out


@contextlib.contextmanager
def numerics(names: list[str], dtype: str, device: str = "cpu"):
    """Every named framework's ``numerics(dtype, device)`` at once (see ``shared.contract.Implementation.numerics``);
    yields {framework: the settings it applied}."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(load(name).numerics(dtype, device)) for name in names}
