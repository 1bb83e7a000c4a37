"""ResNet family in Flax NNX on JAX."""

from .resnet import LAYOUT, ResNet, build_model
from .weights import export_weights, features, import_weights, numerics
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "LAYOUT", "ResNet", "build_model", "export_weights", "features", "import_weights", "numerics", "load_checkpoint", "save_checkpoint",
]
