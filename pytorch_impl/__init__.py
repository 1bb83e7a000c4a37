"""ResNet family in PyTorch."""

from .resnet import ResNet, build_model
from .weights import export_weights, features, import_weights
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "ResNet", "build_model", "export_weights", "features", "import_weights", "load_checkpoint", "save_checkpoint",
]
