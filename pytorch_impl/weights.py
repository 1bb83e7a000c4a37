"""PyTorch <-> canonical weights. The model's state_dict already uses the canonical names and layouts."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import numpy as np
import torch

from shared.weights import IGNORED_SUFFIXES, canonical_shapes, check_weights, from_d2l, is_d2l

from .resnet import ResNet


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The canonical dict: torchvision keys and layouts as numpy arrays (no num_batches_tracked)."""
    state = model.state_dict()
    return {k: state[k].detach().cpu().numpy().copy() for k in canonical_shapes(model.spec)}


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights (or the d2l seed's nn.Sequential keys); strict, all problems at once."""
    if is_d2l(weights):
        weights = from_d2l(weights)
    check_weights(model.spec, weights)
    state = model.state_dict()
    with torch.no_grad():
        for key in canonical_shapes(model.spec):
            state[key].copy_(torch.as_tensor(np.asarray(weights[key])))
        for key in weights:
            if key.endswith(IGNORED_SUFFIXES) and key in state:
                state[key].copy_(torch.as_tensor(np.asarray(weights[key])))


def inputs(model: ResNet, x: np.ndarray) -> torch.Tensor:
    """An NHWC numpy batch as the model takes it: NCHW, the model's dtype. Layout changes only at this edge."""
    dtype = next(model.parameters()).dtype
    return torch.as_tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)), dtype=dtype)


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """The stem's, every block's, the pooled and the logits' outputs for an NHWC numpy batch, returned NHWC."""
    model.train(training)
    with torch.set_grad_enabled(training):
        feats = model.forward_features(inputs(model, x))
    return {k: (v.detach().numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.detach().numpy()) for k, v in feats.items()}


@contextlib.contextmanager
def numerics(dtype: str) -> Iterator[dict[str, str]]:
    """An exact comparison's settings, for its duration only: no TF32 on GPUs, deterministic kernels where they exist.

    Yields what was set; the caller's settings are restored on exit. (``dtype`` needs nothing more in PyTorch.)
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision(),
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield {"torch.backends.cuda.matmul.allow_tf32": "False", "torch.backends.cudnn.allow_tf32": "False",
               "torch.float32_matmul_precision": "highest", "torch.use_deterministic_algorithms": "True (warn only)"}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_float32_matmul_precision(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
