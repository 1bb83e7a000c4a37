"""What a framework package implements, and what a checkpoint format's module implements: the Protocols.

A fourth framework means a package with the modules these Protocols describe (``Implementation`` by the
package itself, ``CheckpointBackend``, ``Trainer``, ``DataParallel``, ``Bench`` and, optionally, ``References``)
and one row in ``shared.frameworks.FRAMEWORKS`` (plus rows in ``shared.checkpoint.FORMATS`` for its own file
formats). A new checkpoint format is a module meeting ``FileFormat`` and one row in ``FORMATS``. Everything
else in ``shared`` reaches these modules only through ``shared.frameworks``' loader, typed by these Protocols.
Arrays cross the seam as numpy, images as NHWC, weights as the canonical dict (``shared.weights``):
torchvision's names and layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Protocol, runtime_checkable

import numpy as np

from .recipe import Convention, Recipe
from .spec import ResNetSpec

Model = Any  # a torch.nn.Module, a keras.Model or an nnx.Module
Optimizer = Any  # the framework's optimizer state, as its trainer builds it


@runtime_checkable
class Implementation(Protocol):
    """The package itself (``pytorch_impl``): the model and its weights adapter (``resnet.py``, ``weights.py``)."""

    LAYOUT: str  # "NCHW" or "NHWC": the layout the model takes; features() always speaks NHWC

    def build_model(self, spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> Model:
        """A randomly initialised model, seeded by ``seed`` through a local generator."""

    def export_weights(self, model: Model) -> dict[str, np.ndarray]:
        """The canonical dict of the model's weights and BN statistics."""

    def import_weights(self, model: Model, weights: Mapping[str, np.ndarray]) -> None:
        """Load canonical weights; raise WeightMismatchError naming every missing, unexpected and mis-shaped key."""

    def features(self, model: Model, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
        """'stem', every block ('layer3.2'), 'avgpool', 'flatten' and 'fc' for an NHWC batch, NHWC out."""

    def numerics(self, dtype: str, device: str = "cpu") -> ContextManager[dict[str, str]]:
        """Run on ``device`` ("cpu" or "gpu") with the settings an exact comparison in ``dtype`` needs (no TF32,
        full-precision matmuls, 64-bit JAX for float64), inside the context only; yields what it set, the
        device included, for the report. A device the framework cannot see is a ParityInputError."""


@runtime_checkable
class FileFormat(Protocol):
    """A module that reads and writes checkpoint files of one or more formats (rows of ``shared.checkpoint.FORMATS``)
    as canonical weights: a framework's ``checkpoint.py``, a module of ``shared.libraries``,
    ``shared.checkpoint.safetensors``."""

    def read_weights(self, path: Path, fmt: str, spec: ResNetSpec | None = None) -> Any:
        """A ``shared.checkpoint.Checkpoint``; ``spec`` only for files that store variables by position."""

    def write_weights(
        self, path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str, *, consume: bool = False,
    ) -> list[str] | None:
        """Write ``fmt`` at ``path`` (not atomic: ``shared.checkpoint`` stages it); ``consume`` may empty ``weights``.
        A format whose row ``keeps_preprocessing`` also takes ``preprocessing=`` and returns notes on where it went."""


@runtime_checkable
class CheckpointBackend(FileFormat, Protocol):
    """``<package>.checkpoint``: the framework's own file formats, and its models built from canonical weights."""

    def model_from_weights(self, spec: ResNetSpec, weights: Mapping[str, np.ndarray], dtype: str = "float32") -> Model:
        """A model holding ``weights``, built without random initialisation."""

    def weights_to_save(self, model: Model) -> dict[str, np.ndarray]:
        """What a file of ``model`` holds: its canonical weights, and what the framework's own files keep besides
        (PyTorch's BN ``num_batches_tracked``)."""


@runtime_checkable
class Trainer(Protocol):
    """``<package>.train``: the recipe's training step in the framework's idiom (PyTorch's update rule)."""

    BN_RUNNING_VAR: Convention  # the running variance the framework stores: "unbiased" (PyTorch) or "biased"
    TRAINING_STATE_FILES: tuple[str, ...]  # what save_training_state writes into its directory

    def make_optimizer(self, model: Model, recipe: Recipe, total_steps: int) -> Optimizer: ...

    def train_step(self, model: Model, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[float, np.ndarray]:
        """One step on an NHWC batch: the loss and the train-mode logits (before the update)."""

    def gradients(self, model: Model, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
        """The loss gradient of every parameter in train mode, canonical names and layouts (no weight decay)."""

    def apply_gradients(self, model: Model, optimizer: Optimizer, grads: Mapping[str, np.ndarray], recipe: Recipe) -> None:
        """One optimizer step with the given loss gradients (``gradients``' form); the recipe's L2 is added as in train_step."""

    def predict(self, model: Model, x: np.ndarray, batch_size: int) -> np.ndarray:
        """Eval-mode logits of an NHWC array, batch by batch."""

    def export_optimizer_state(self, model: Model, optimizer: Optimizer) -> dict[str, np.ndarray]:
        """The optimizer's state in canonical names (``shared.recipe.OPTIMIZER_SLOTS``): ``step``, the optimizer steps
        taken (the schedule and Adam's bias correction read it), and ``<slot>.<parameter key>`` for each of torch's
        slots, canonical layouts; slots torch creates lazily are exported as the zeros they act as."""

    def import_optimizer_state(self, model: Model, optimizer: Optimizer, state: Mapping[str, np.ndarray]) -> None:
        """Set the optimizer to ``state`` (``export_optimizer_state``'s form): the next step continues from it."""

    def save_training_state(self, directory: str, model: Model, optimizer: Optimizer) -> None:
        """The framework's native training checkpoint (model and optimizer) in ``directory``."""

    def load_training_state(self, directory: str, model: Model, optimizer: Optimizer) -> None:
        """Restore what ``save_training_state`` wrote, strictly."""


@runtime_checkable
class DataParallel(Protocol):
    """``<package>.parallel.DataParallel``: the Trainer's step on N replicas with the framework's own engine.

    Built once per process, before the framework first runs (it fixes the device count); every member
    takes and returns what the single-device ones do: whole global batches in, the global loss and
    logits and the canonical weights out. Each replica normalises its own shard unless ``sync_bn``;
    BN running statistics are then replica 0's (the rule in all three frameworks).
    """

    BN_RUNNING_VAR: Convention
    TRAINING_STATE_FILES: tuple[str, ...]

    @property
    def replicas(self) -> int: ...

    @property
    def sync_bn(self) -> bool: ...

    @property
    def is_writer(self) -> bool:
        """The one process that prints and writes checkpoints."""

    def __init__(self, replicas: int, *, sync_bn: bool, device: str = "cpu", rank: int = 0,
                 rendezvous: str | None = None, timeout: float = 300.0) -> None:
        """Join the run: ``rank`` among the processes (PyTorch), ``rendezvous`` a ``file://`` URL or None
        for the launch environment's; ``timeout``: seconds to wait for the other processes, joining and in a
        collective (``shared.parallel.TIMEOUT_S``). Too few devices is a ResNetParityError."""

    def numerics(self, dtype: str, device: str = "cpu") -> ContextManager[dict[str, str]]: ...
    def build_model(self, spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> Model: ...
    def import_weights(self, model: Model, weights: Mapping[str, np.ndarray]) -> None: ...
    def export_weights(self, model: Model) -> dict[str, np.ndarray]: ...
    def make_optimizer(self, model: Model, recipe: Recipe, total_steps: int) -> Optimizer: ...
    def train_step(self, model: Model, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[float, np.ndarray]: ...
    def gradients(self, model: Model, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]: ...
    def predict(self, model: Model, x: np.ndarray, batch_size: int) -> np.ndarray: ...
    def save_training_state(self, directory: str, model: Model, optimizer: Optimizer) -> None: ...
    def load_training_state(self, directory: str, model: Model, optimizer: Optimizer) -> None: ...

    def barrier(self) -> None:
        """Wait until every process of the run gets here."""

    def close(self) -> None:
        """Leave the run (the process group, the coordination service) once the task is done."""

    def lost(self, exc: BaseException) -> str | None:
        """One line of what the engine reported, if ``exc`` is its word that another process of the run died or
        stopped answering (a collective broke off or timed out); None for any other error."""


Step = Callable[[], object]  # runs one batch to completion (its outputs fetched to the host)
TOTAL_STEPS = 10**6  # the schedule a benchmark's optimizer is made for: long enough that a benchmark never ends it


@runtime_checkable
class Bench(Protocol):
    """``<package>.bench``: our model as a step ``shared.bench`` times."""

    def ours(self, spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray, recipe: Recipe, *, compile: bool,
             dtype: str) -> Step:
        """Build our model and return its step: ``mode`` "eval" (predict one batch) or "train" (the trainer's step)."""


@runtime_checkable
class References(Protocol):
    """``<package>.references`` (optional): the framework's own models, or models in its documented style, for
    ``bench`` to time against ours."""

    def references(self, spec: ResNetSpec, size: int) -> tuple[list[tuple[str, Callable[[], Any]]], list[str]]:
        """([(label, build)], [why a reference is missing]): the reference models for ``spec`` at ``size`` x
        ``size``, importable here."""

    def reference_step(self, build: Callable[[], Any], spec: ResNetSpec, mode: str, x: np.ndarray, y: np.ndarray,
                       recipe: Recipe, *, compile: bool) -> Step:
        """Build a reference (``build()``) and return its step, run as ``Bench.ours`` runs ours."""


def missing_members(module: object, protocol: type) -> list[str]:
    """The names a module lacks to meet ``protocol``, its base Protocols' included (for the contract test and the
    loader's error)."""
    names = []
    for cls in protocol.__mro__:
        if cls is not Protocol and getattr(cls, "_is_protocol", False):
            names += [*vars(cls).get("__annotations__", {})]
            names += [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]
    return sorted({n for n in names if not hasattr(module, n)})
