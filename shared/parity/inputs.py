"""What a parity check starts from: the frameworks taking part, the weights (a user's checkpoint or random ones,
every tensor randomised) and the input batch (a user's array or a random one), each checked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import frameworks
from ..checkpoint import Source, prepare
from ..errors import ParityInputError, one_line
from ..spec import DTYPES, ResNetSpec, get_spec
from ..weights import randomize


def participants(source: str, targets: list[str] | None) -> tuple[str, list[str]]:
    """(the reference, every framework checked, the reference first); all installed by default."""
    source = frameworks.canonical_name(source)
    names = dict.fromkeys(map(frameworks.canonical_name, targets or frameworks.installed()))
    return source, [source, *(n for n in names if n != source)]


def starting_weights(arch: str | ResNetSpec | None, weights, weights_format: str | None, dtype: str, seed: int
                     ) -> tuple[ResNetSpec, dict[str, np.ndarray], dict, list[str]]:
    """(spec, canonical weights, what to record, notes): the user's checkpoint, or random weights for ``arch``
    (every tensor, BN statistics included; float64 when ``dtype`` is)."""
    if dtype not in DTYPES:
        raise ParityInputError(f"dtype={dtype!r}: choose from {', '.join(DTYPES)}")
    if weights is not None:
        return load_weights(weights, arch, weights_format)
    if arch is None:
        raise ParityInputError("pass arch=NAME, or weights=FILE to check a checkpoint")
    spec = get_spec(arch)
    initial = randomize(spec, seed, np.float64 if dtype == "float64" else np.float32)
    return spec, initial, {"origin": "random", "seed": seed}, []


def load_weights(weights: Mapping[str, np.ndarray] | Source | str | os.PathLike, arch: str | ResNetSpec | None,
                 fmt: str | None = None) -> tuple[ResNetSpec, dict[str, np.ndarray], dict, list[str]]:
    """(spec, float32 canonical weights, what to record, notes) from a checkpoint file any reader takes (or a
    ``Source`` opened with its options, read here unless it has been), or a dict."""
    if isinstance(weights, Mapping):
        if arch is None:
            raise ParityInputError("weights given as a dict need arch=NAME")
        spec = get_spec(arch)
        prepared, notes = prepare(weights, spec, Path("weights"))
        return spec, prepared, {"origin": "dict"}, notes
    source = weights if isinstance(weights, Source) else Source.open(weights, fmt)
    if source.spec is None:
        source.read(arch)
    prepared, dtype_notes = source.prepared()
    record = {"origin": str(source.path), "format": source.format.name, "dropped": source.dropped}
    return source.spec, prepared, record, source.notes + dtype_notes


def load_inputs(inputs: np.ndarray | str | os.PathLike, spec: ResNetSpec) -> np.ndarray:
    """A user's NHWC batch (array or .npy file), checked: rank 4, the spec's channels, floating point, finite."""
    origin = inputs
    if not isinstance(inputs, np.ndarray):
        try:
            inputs = np.load(Path(inputs), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ParityInputError(f"{origin}: not a readable .npy array: {one_line(exc)}") from exc
    if inputs.ndim != 4:
        raise ParityInputError(f"{_label(origin)}: an NHWC batch has 4 axes, this one has shape {inputs.shape}")
    if inputs.shape[-1] != spec.in_channels:
        raise ParityInputError(f"{_label(origin)}: shape {inputs.shape} has {inputs.shape[-1]} channels last, "
                               f"{spec.name} takes {spec.in_channels} (NHWC)")
    if inputs.dtype.name not in ("float16", "bfloat16", "float32", "float64"):
        raise ParityInputError(f"{_label(origin)}: holds {inputs.dtype} values; pass floating-point images, "
                               "normalised as the model expects")
    if not np.isfinite(inputs.astype(np.float64)).all():
        raise ParityInputError(f"{_label(origin)}: holds NaN or Inf")
    if min(inputs.shape[:3]) < 1:
        raise ParityInputError(f"{_label(origin)}: an empty batch, shape {inputs.shape}")
    return inputs


def batch_problem(spec: ResNetSpec, batch: int, size: int) -> str | None:
    """Why a batch of ``batch`` images of ``size`` x ``size`` cannot run ``spec`` here (empty, or one feature map of
    the stem's width at the input's size larger than this machine's memory: a network holds several), else None;
    the message names size= and batch=."""
    if size < 1 or batch < 1:
        return f"size={size}, batch={batch}: both must be positive"
    channels = max(spec.in_channels, spec.stem_width)
    need, have = 4 * batch * size * size * channels, physical_memory()
    if have and need > have:
        return (f"size={size}, batch={batch}: one float32 feature map of {channels} channels at {size}x{size} for "
                f"{batch} images takes {need / 2**30:,.0f} GiB, more than this machine's {have / 2**30:,.0f} GiB")
    return None


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the system tells (POSIX), else None."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _label(origin) -> str:
    return "the input array" if isinstance(origin, np.ndarray) else str(origin)
