"""PyTorch <-> canonical weights. The model's state_dict already uses the canonical names and layouts."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import numpy as np
import torch

from shared.errors import ParityInputError
from shared.weights import IGNORED_SUFFIXES, canonical_shapes, check_weights, recognise

from .resnet import ResNet


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The canonical dict: torchvision keys and layouts as numpy arrays (no num_batches_tracked)."""
    state = model.state_dict()
    return {k: state[k].detach().cpu().numpy().copy() for k in canonical_shapes(model.spec)}


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical weights (or a state_dict of the seeds' networks or Hugging Face's, by their keys); strict,
    all problems at once."""
    weights, _ = recognise(weights)
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
    param = next(model.parameters())
    return torch.as_tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)), dtype=param.dtype, device=param.device)


def features(model: ResNet, x: np.ndarray, *, training: bool = False) -> dict[str, np.ndarray]:
    """The stem's, every block's, the pooled and the logits' outputs for an NHWC numpy batch, returned NHWC."""
    model.train(training)
    with torch.set_grad_enabled(training):
        feats = model.forward_features(inputs(model, x))
    feats = {k: as_numpy(v.detach()) for k, v in feats.items()}
    return {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for k, v in feats.items()}


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as numpy: float16/bfloat16 (mixed precision's activations) as float32, exactly; numpy has no bfloat16."""
    return tensor.to("cpu", torch.promote_types(tensor.dtype, torch.float32)).numpy()


@contextlib.contextmanager
def numerics(dtype: str, device: str = "cpu") -> Iterator[dict[str, str]]:
    """Models built inside go to ``device``; an exact comparison's settings hold for the duration only:
    no TF32 on GPUs, deterministic kernels there. Yields what was set; the caller's settings are restored
    on exit. (``dtype`` needs nothing more in PyTorch.)"""
    target = torch.device("cuda" if device == "gpu" else device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ParityInputError("device gpu: PyTorch sees no CUDA device here")
    # the kernels that torch.use_deterministic_algorithms replaces are CUDA's (atomics); on the CPU it would
    # change nothing here and costs 2 s, the import of torch._inductor it triggers
    deterministic = target.type == "cuda"
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision(),
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with target:
            settings = {"device": str(torch.empty(0).device), "torch.backends.cuda.matmul.allow_tf32": "False",
                        "torch.backends.cudnn.allow_tf32": "False", "torch.float32_matmul_precision": "highest"}
            if deterministic:
                settings["torch.use_deterministic_algorithms"] = "True (warn only)"
            yield settings
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_float32_matmul_precision(saved[2])
        if deterministic:
            torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
