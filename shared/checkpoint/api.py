"""The Python API of checkpoint files: canonical weights, or a framework's model, from any file and back."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .. import frameworks
from ..contract import Model
from ..spec import ResNetSpec, get_spec
from ..weights import check_weights
from .destination import Destination
from .source import Source


def load(
    path: str | os.PathLike, fmt: str | None = None, arch: str | ResNetSpec | None = None, *,
    strip_prefix: str | None = None, drop_unexpected: bool = False,
) -> tuple[dict[str, np.ndarray], ResNetSpec | None]:
    """(canonical weights, the architecture the file records or None); framework formats import their framework.

    ``arch`` is needed only for Keras 3 files too old to record layer names (read by position);
    ``strip_prefix`` and ``drop_unexpected`` as for ``Source.open``."""
    source = Source.open(path, fmt, strip_prefix=strip_prefix, drop_unexpected=drop_unexpected).read(arch)
    return source.weights, source.recorded


def save(
    path: str | os.PathLike, weights: Mapping[str, np.ndarray], spec: ResNetSpec | str, fmt: str | None = None,
) -> None:
    """Write canonical weights in the format of ``path``'s suffix, replacing an existing file atomically."""
    spec = get_spec(spec)
    check_weights(spec, weights)
    Destination.open(path, fmt, force=True).write(weights, spec)


def load_model(framework: str, path: str | os.PathLike, arch: str | ResNetSpec | None = None, *,
               strip_prefix: str | None = None, drop_unexpected: bool = False) -> Model:
    """A float32 model of ``framework`` from any file ``load`` reads; the architecture from ``arch``, the file's
    record, or inferred from the weights."""
    source = Source.open(path, strip_prefix=strip_prefix, drop_unexpected=drop_unexpected).read(arch)
    return frameworks.load_checkpoints(framework).model_from_weights(source.spec, source.float32())


def save_model(model: Model, path: str | os.PathLike) -> None:
    """Write one of our models in the format ``path`` names (no suffix: an Orbax directory), replacing it atomically."""
    backend = frameworks.load_checkpoints(frameworks.framework_of(model))
    save(path, backend.weights_to_save(model), model.spec)
