"""ResNet family in Flax NNX on JAX."""

from .resnet import ResNet, build_model
from .weights import export_weights, features, import_weights

__all__ = ["ResNet", "build_model", "export_weights", "features", "import_weights"]
