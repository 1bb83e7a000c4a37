"""ResNet family in Flax NNX on JAX."""

from .resnet import LAYOUT, ResNet, build_model
from .weights import export_weights, features, import_weights, numerics

__all__ = [
    "LAYOUT", "ResNet", "build_model", "export_weights", "features", "import_weights", "numerics",
]
