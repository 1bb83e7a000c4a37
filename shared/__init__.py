"""resnet-parity's framework-free library: the spec, canonical weights, checkpoint files, parity checks.

The public API, importable from here without importing any framework::

    from shared import get_spec, list_specs, ResNetSpec, checkpoint, compare, train_parity, convert, assert_parity
"""

from . import checkpoint
from .convert import convert
from .errors import (
    ArchitectureError, CheckpointError, FrameworkUnavailable, ParityInputError, ResNetParityError, SpecError,
    WeightMismatchError,
)
from .parity import compare, train_parity
from .spec import ResNetSpec, get_spec, list_specs
from .testing import assert_parity
from .version import __version__

__all__ = [
    "ArchitectureError", "CheckpointError", "FrameworkUnavailable", "ParityInputError", "ResNetParityError",
    "ResNetSpec", "SpecError", "WeightMismatchError", "assert_parity", "checkpoint", "compare", "convert", "get_spec",
    "list_specs", "train_parity", "__version__",
]
