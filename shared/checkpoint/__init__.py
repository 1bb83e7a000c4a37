"""Checkpoint files: every format behind one contract, a ``Source`` read once, a ``Destination`` written atomically.

Every reader returns the canonical dict (torchvision names and layouts, numpy). ``formats``: the table of
formats, the module that handles each (loaded through ``shared.frameworks``' one loader when a file of that
format is used) and the format a path is; ``source``: reading and checking; ``destination``: staged writes;
``api``: ``load``/``save`` of canonical weights and ``load_model``/``save_model`` of a framework's model.
"""

from ..errors import CheckpointError
from .api import load, load_model, save, save_model
from .destination import Destination, honour_umask
from .formats import FLOAT_DTYPES, FORMATS, ONNX_OPSET, Checkpoint, Format, detect_format, file_format, sniff
from .native import canonical_kinds, from_native, overclaims
from .record import spec_from_fields, spec_from_metadata, spec_to_metadata
from .source import Source, as_float32, dtype_of, mismatch_line, prepare

__all__ = [
    "FLOAT_DTYPES", "FORMATS", "ONNX_OPSET", "Checkpoint", "CheckpointError", "Destination", "Format", "Source",
    "as_float32", "canonical_kinds", "detect_format", "dtype_of", "file_format", "from_native", "honour_umask", "load",
    "load_model", "mismatch_line", "overclaims", "prepare", "save", "save_model", "sniff", "spec_from_fields",
    "spec_from_metadata", "spec_to_metadata",
]
