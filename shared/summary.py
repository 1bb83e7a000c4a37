"""Each top-level layer's output shape, as the seed tutorials print it."""

from __future__ import annotations

import numpy as np

from . import frameworks
from .errors import ResNetParityError
from .parity.inputs import batch_problem
from .spec import get_spec


def summary(arch: str, framework: str, *, size: int | None = None, batch: int = 1, **overrides) -> list[tuple[str, tuple[int, ...]]]:
    """(layer, output shape in the framework's own layout) for the stem, each stage, the pooling, flatten and fc
    (no fc in a headless backbone, num_classes=0)."""
    spec = get_spec(arch, **{k: v for k, v in overrides.items() if v is not None})
    size = spec.image_size if size is None else size
    if problem := batch_problem(spec, batch, size):
        raise ResNetParityError(problem)
    impl = frameworks.load(framework)
    feats = impl.features(impl.build_model(spec), np.zeros((batch, size, size, spec.in_channels), np.float32))
    last = {plan.stage: plan.prefix for plan in spec.blocks()}  # a stage's output is its last block's
    rows = [("stem", feats["stem"]), *((f"layer{s}", feats[p]) for s, p in last.items())]
    rows += [(k, feats[k]) for k in ("avgpool", "flatten", *([] if spec.headless else ["fc"]))]

    def native(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], shape[3], shape[1], shape[2]) if impl.LAYOUT == "NCHW" and len(shape) == 4 else shape

    return [(layer, tuple(int(d) for d in native(value.shape))) for layer, value in rows]
