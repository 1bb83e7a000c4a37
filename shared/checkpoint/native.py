"""What format modules share to read a framework's variables: canonical names from module paths and variable
names, and the check that refuses arrays far larger than the bytes that store them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import CheckpointError
from ..weights import ParamTable, to_canonical

_KINDS = [
    (re.compile(r"conv1|layer\d+\.\d+\.(conv\d+|downsample\.0)"), ("conv",)),
    (re.compile(r"bn1|post_bn|layer\d+\.\d+\.(bn\d+|downsample\.2)"), ("bn",)),
    # a projection's BN, or ResNet-D's conv (after the average pool at downsample.0)
    (re.compile(r"layer\d+\.\d+\.downsample\.1"), ("conv", "bn")),
    (re.compile(r"layer\d+\.\d+\.se\.fc[12]"), ("conv",)),  # SE's 1x1 convs
    (re.compile(r"layer\d+\.\d+\.se\.conv"), ("conv1d",)),  # ECA's
    (re.compile(r"fc"), ("linear",)),
    # a block's gate (timm's names): SE's two 1x1 convs, ECA's 1-D conv over the channels
    (re.compile(r"layer\d+\.\d+\.se\.fc[12]"), ("conv",)),
    (re.compile(r"layer\d+\.\d+\.se\.conv"), ("conv1d",)),
]


def canonical_kinds(module: str) -> tuple[str, ...]:
    """The layer kinds ('conv', 'conv1d', 'bn', 'linear') a canonical module path can name; the variables decide
    between two."""
    if m := re.fullmatch(r"conv1\.(\d+)", module):  # a deep stem: conv 3i, BN 3i + 1, ReLU 3i + 2
        return (("conv",), ("bn",), ())[int(m[1]) % 3]
    return next((kinds for pattern, kinds in _KINDS if pattern.fullmatch(module)), ())


def from_native(
    variables: Mapping[tuple[str, str], np.ndarray], table: ParamTable, path: Path, *, consume: bool = False,
) -> dict[str, np.ndarray]:
    """Canonical weights from (module path, framework variable name) -> array, by the naming scheme alone.

    With ``consume``, ``variables`` (a dict no one else needs) is emptied as it is converted, so a
    framework array is released as soon as its canonical copy exists.
    """
    inverse = {kind: {attr: (param, perm) for param, (attr, perm) in params.items()} for kind, params in table.items()}
    attrs: dict[str, set[str]] = {}
    for module, attr in variables:
        attrs.setdefault(module, set()).add(attr)
    kinds = {module: next((k for k in canonical_kinds(module) if names <= set(inverse[k])), None)
             for module, names in attrs.items()}
    out, unknown = {}, []
    for module, attr in list(variables):
        value = variables.pop((module, attr)) if consume else variables[(module, attr)]
        kind = kinds[module]
        if kind is None:
            unknown.append(f"{module}/{attr}")
            continue
        param, perm = inverse[kind][attr]
        value = np.asarray(value)
        if perm and value.ndim != len(perm):
            raise CheckpointError(f"{path}: {module}/{attr} has shape {value.shape}, "
                                  f"not a {kind} kernel's {len(perm)} axes")
        out[f"{module}.{param}"] = to_canonical(value, perm)
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} variables are not ResNet layers, e.g. {', '.join(unknown[:3])}")
    return out


def overclaims(declared: int, stored: int) -> bool:
    """Arrays far larger than the bytes that store them: weights hardly compress, so that is a
    compression bomb (or missing chunks a reader would fill in), to be refused."""
    return declared > 16 * stored + (1 << 20)
