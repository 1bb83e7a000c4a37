"""Test-only workaround: let the CUDA build of torchvision import on the CPU build of torch.

The registry's torchvision wheels link their C++ ops (``torchvision/_C.so``) against CUDA torch;
with the CPU torch the library fails to load (``libc10.so``/CUDA symbols), torchvision then skips
its ops, but ``torchvision/_meta_registrations.py`` still calls
``torch.library.register_fake("torchvision::nms")`` (and ``qnms``), which raises
``RuntimeError: operator torchvision::nms does not exist``. Defining those two schemas first lets
the pure-Python parts (transforms, timm's layers, transformers' image processors) import.
Detection ops (nms, roi_align, ...) stay unusable, which no ResNet needs.
"""

from __future__ import annotations

_LIBRARY = None  # keep a reference: a collected torch.library.Library removes its definitions


def install_torchvision_shim() -> bool:
    """Define ``torchvision::nms``/``qnms`` if torchvision's C++ ops cannot load; True if defined now.

    Call before the first ``import torchvision`` (directly or through timm/transformers).
    Idempotent, and a no-op where the real ops already exist (a matching torchvision build).
    """
    global _LIBRARY
    import sys

    import torch

    if _LIBRARY is not None or "torchvision" in sys.modules:
        return False
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return False  # the real ops are registered (matching torch/torchvision builds)
    except RuntimeError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = lib
    return True
