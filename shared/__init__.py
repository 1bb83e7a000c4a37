"""resnet-parity's framework-free library: the spec, canonical weights, checkpoint files, parity checks.

The public API, importable from here without importing any framework::

    from shared import get_spec, list_specs, ResNetSpec, checkpoint, compare, convert
"""

__version__ = "0.2.0"

from . import checkpoint
from .convert import convert
from .errors import (
    ArchitectureError, CheckpointError, FrameworkUnavailable, ParityInputError, ResNetParityError, SpecError,
    WeightMismatchError,
)
from .parity import compare
from .spec import ResNetSpec, get_spec, list_specs
from .train_parity import train_parity

__all__ = [
    "ArchitectureError", "CheckpointError", "FrameworkUnavailable", "ParityInputError", "ResNetParityError",
    "ResNetSpec", "SpecError", "WeightMismatchError", "checkpoint", "compare", "convert", "get_spec", "list_specs",
    "train_parity", "__version__",
]
