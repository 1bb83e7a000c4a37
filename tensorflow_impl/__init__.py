"""ResNet family in Keras 3 on the TensorFlow backend."""

import os

# TensorFlow's C++ logs are silenced before it loads (log verbosity only; Python exceptions still surface).
# Every performance switch, oneDNN included, stays as TensorFlow ships it: the parity checks' float64
# floor takes oneDNN's different low bits on merit.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared.frameworks import quiet_native_stderr  # noqa: E402

# TensorFlow's C++ start-up notices (the CUDA probe) are written to fd 2 before any log level applies
with quiet_native_stderr():
    import tensorflow  # noqa: E402, F401
    import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"tensorflow_impl needs Keras on the TensorFlow backend, but KERAS_BACKEND selects "
                      f"{keras.backend.backend()!r}: unset it or set KERAS_BACKEND=tensorflow before Keras is imported")

from .resnet import LAYOUT, ResNet, build_model  # noqa: E402
from .weights import export_weights, features, import_weights, numerics  # noqa: E402
from .keras_applications import from_keras_applications, to_keras_applications  # noqa: E402

__all__ = [
    "LAYOUT", "ResNet", "build_model", "export_weights", "features", "from_keras_applications", "import_weights", "numerics",
    "to_keras_applications",
]
