"""A checkpoint to read: a ``Source`` is opened once (its format detected, the path checked) and read once into
canonical weights, the architecture they are (named, recorded or inferred, and checked strictly) and notes.

Untrusted input: whatever a reader trips over becomes one ``CheckpointError`` line naming the file.
State_dicts inside other code's names (``keys``: a wrapper's prefix, mmpretrain's layout) are unwrapped here, and
those under another library's names (``weights.NAMINGS``) renamed, whatever read them.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import infer
from ..errors import ArchitectureError, CheckpointError, WeightMismatchError, one_line
from ..preprocessing import Preprocessing
from ..spec import ResNetSpec, get_spec
from ..weights import IGNORED_SUFFIXES, NAMINGS, canonical_shapes, check_weights, recognise
from . import keys
from .formats import FLOAT_DTYPES, FORMATS, Checkpoint, Format, detect_format, file_format, sniff

# The module paths a ResNet's keys start with: what inference looks at when unexpected keys are to be dropped
RESNET_KEY = re.compile(r"(conv1|bn1|post_bn|fc|layer\d+)\.")


@dataclass
class Source:
    """A checkpoint file: ``open`` detects its format and checks the path; ``read`` fills in the rest."""

    path: Path
    format: Format  # as detected; a reader may tell it more precisely (a msgpack of the Flax example's variables)
    option: str = "fmt"  # the caller's name for the format argument, for the messages that ask for it
    strip_prefix: str | None = None  # a prefix to remove from the keys that carry it (see ``keys.unwrap``)
    drop_unexpected: bool = False  # drop the keys the architecture has no place for, instead of refusing
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # canonical names, the file's dtypes and counters
    recorded: ResNetSpec | None = None  # the architecture the file records
    spec: ResNetSpec | None = None  # the architecture of the weights: named, recorded or inferred; checked
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # the keys drop_unexpected dropped (names as unwrapped)
    preprocessing: Preprocessing | None = None  # what the file records, else its library's documented default

    @classmethod
    def open(cls, path: str | os.PathLike, fmt: str | Format | None = None, *, option: str = "fmt",
             strip_prefix: str | None = None, drop_unexpected: bool = False) -> Source:
        """The file at ``path`` in format ``fmt`` (default: by suffix and content); fails early, in one line, on a
        missing, empty or wrong-kind path. ``option`` names ``fmt`` in the messages. ``strip_prefix``: remove this
        prefix from the keys that carry it (prefixes every key carries, such as ``module.`` or ``backbone.``, go
        without asking); ``drop_unexpected``: drop keys the architecture has no place for (listed in ``dropped``)."""
        path = Path(path)
        found = fmt if isinstance(fmt, Format) else detect_format(path, fmt, option=option)
        check_source(path, found)
        return cls(path, found, option, strip_prefix, drop_unexpected)

    def reopened(self, fmt: Format) -> Source:
        """A fresh Source of this file in ``fmt``, with the same options, not read yet."""
        return Source(self.path, fmt, self.option, self.strip_prefix, self.drop_unexpected)

    def read(self, arch: str | ResNetSpec | None = None) -> Source:
        """Read the weights and settle their architecture: ``arch`` if given, else the file's record, else inferred.

        ``arch`` also reaches the reader, which needs it only for files that store variables by position."""
        found = self._read(None if arch is None else get_spec(arch))
        self.weights, self.recorded, self.format = found.weights, found.spec, found.format
        self.spec, notes = self._architecture(arch)
        self.notes = found.notes + notes
        self.preprocessing = found.preprocessing or documented(self.format, self.spec)
        return self

    def prepared(self, *, keep_dtype: bool = False, allow_nonfinite: bool = False,
                 target: Format | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
        """The weights to write or run (``prepare``)."""
        return prepare(self.weights, self.spec, self.path, keep_dtype=keep_dtype, allow_nonfinite=allow_nonfinite,
                       target=target)

    def float32(self) -> dict[str, np.ndarray]:
        """What a model is built from: the tensors as float32 (exact for float16/bfloat16), counters kept."""
        return {**self.weights, **as_float32(self.weights, self.spec)}

    def _read(self, spec: ResNetSpec | None) -> Checkpoint:
        path, fmt = self.path, self.format
        try:
            found = file_format(fmt).read_weights(path, fmt.name, spec)
        except CheckpointError:
            raise
        except Exception as exc:  # untrusted bytes: whatever a library trips over is a bad file, not a crash
            guess = sniff(path)
            hint = f"; it looks like {FORMATS[guess].label} (pass {self.option}={guess})" if guess and guess != fmt.name else ""
            raise CheckpointError(f"{path}: not a readable {fmt.label}: {one_line(exc)}{hint}") from exc
        bad = [k for k, v in found.weights.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
        if bad:
            raise CheckpointError(f"{path}: entries that are not named arrays: {', '.join(map(str, bad[:3]))}")
        try:
            found.weights, unwrapped = keys.unwrap(found.weights, self.strip_prefix)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        found.notes += unwrapped
        weights, naming = recognise(found.weights)
        if fmt.naming and naming != fmt.naming:
            expected = NAMINGS[fmt.naming]
            raise CheckpointError(f"{path}: not a {expected.label} state_dict (no {' and '.join(expected.signature)})")
        if naming:
            found.weights = weights
            found.notes.append(f"renamed the {NAMINGS[naming].label} state_dict's keys to torchvision's")
        return found

    def _architecture(self, arch: str | ResNetSpec | None) -> tuple[ResNetSpec, list[str]]:
        path, weights = self.path, self.weights
        notes = []
        advice = self._advice()
        if self.drop_unexpected:  # inference sees the ResNet's own keys only
            weights = {k: v for k, v in weights.items() if RESNET_KEY.match(k)}
        if arch is not None:
            spec = get_spec(arch)
            if self.recorded is not None and self.recorded != spec:
                notes.append(f"the file records {self.recorded.name}; using {spec.name} as asked")
        elif self.recorded is not None:
            spec = self.recorded
            if sum(spec.layers) > len(weights):  # every block has tensors; also keeps a forged record from stalling us
                raise CheckpointError(f"{path}: records {spec.name} with {sum(spec.layers)} blocks, "
                                      f"but holds only {len(weights)} tensors")
            notes.append(f"architecture {spec.name}, as the file records it")
        else:
            try:
                found = infer.infer(weights)
            except ArchitectureError as exc:
                raise CheckpointError(f"{path}: {exc}{advice}") from exc
            spec = found.spec
            notes += found.notes()
        if self.drop_unexpected:
            expected = canonical_shapes(spec)
            counters = {f"{k.rsplit('.', 1)[0]}{suffix}" for k in expected for suffix in IGNORED_SUFFIXES}
            self.dropped = [k for k in self.weights if k not in expected and k not in counters]
            self.weights = weights = {k: v for k, v in self.weights.items() if k not in self.dropped}
            if self.dropped:
                shown = ", ".join(self.dropped[:5]) + (f", ... ({len(self.dropped)} in all)" if len(self.dropped) > 5 else "")
                notes.append(f"dropped {len(self.dropped)} key{'s' if len(self.dropped) > 1 else ''} {spec.name} has no "
                             f"place for, as asked (drop_unexpected=True): {shown}")
        if spec.headless:
            notes.append("no classifier (no fc): a headless backbone, read as a feature extractor (num_classes=0); "
                         "every block and the pooled features are compared, no logits")
        try:
            check_weights(spec, weights)
        except WeightMismatchError as err:
            hint = ""
            if arch is not None:
                with contextlib.suppress(ArchitectureError):
                    hint = f"; the weights look like {infer.infer(weights).describe()}"
            if err.unexpected and not advice and not self.drop_unexpected:
                advice = "; drop_unexpected=True drops the unexpected keys"
            raise CheckpointError(f"{path}: weights do not fit {spec.name}: {mismatch_line(err)}{hint}{advice}") from err
        return spec, notes

    def _advice(self) -> str:
        """What the user can do about keys no ResNet has, for every refusal: name a prefix they all share, or drop
        them."""
        foreign = [k for k in self.weights if not RESNET_KEY.match(k)]
        if self.drop_unexpected or not foreign:
            return ""
        shared = os.path.commonprefix(foreign).rpartition(".")[0]
        if len(foreign) == len(self.weights) and shared:
            return f"; every key starts with {shared + '.'!r}: strip_prefix={shared}. removes it"
        return (f"; {len(foreign)} key{'s' if len(foreign) > 1 else ''} no ResNet has ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}): drop_unexpected=True drops {'them' if len(foreign) > 1 else 'it'}")


def documented(fmt: Format, spec: ResNetSpec) -> Preprocessing | None:
    """What ``fmt``'s library documents for an ImageNet ResNet (an RGB input and an ImageNet stem), at its size."""
    found = fmt.documented_preprocessing
    if found is None or spec.in_channels != 3 or spec.stem == "cifar":
        return None
    return found.replace(size=(spec.image_size, spec.image_size),
                         origin=f"{found.origin} (the file records none)")


def check_source(path: Path, fmt: Format) -> None:
    """Fail early, with one line, on a missing, empty or wrong-kind path."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if fmt.layout == "directory" and not path.is_dir():
        raise CheckpointError(f"{path}: {fmt.label} is a directory, but this is a file")
    if fmt.layout == "file" and path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a {fmt.label} file")
    if path.is_dir() and not any(path.iterdir()):
        raise CheckpointError(f"{path}: empty directory")
    if not path.is_dir() and path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")


def mismatch_line(err: WeightMismatchError) -> str:
    """A WeightMismatchError in one line: counts, and the first few keys of each kind."""
    parts = []
    for label, items in (("missing", err.missing), ("unexpected", err.unexpected)):
        if items:
            parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
    if err.mismatched:
        shown = ", ".join(f"{k} {got} instead of {want}" for k, got, want in err.mismatched[:2])
        parts.append(f"{len(err.mismatched)} of the wrong shape ({shown}{', ...' if len(err.mismatched) > 2 else ''})")
    return "; ".join(parts)


def prepare(
    weights: Mapping[str, np.ndarray], spec: ResNetSpec, path: Path, *,
    keep_dtype: bool = False, allow_nonfinite: bool = False, target: Format | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The weights to write: floating point checked, NaN/Inf refused unless allowed, float32 unless kept."""
    keys = list(canonical_shapes(spec))
    extras = {k: v for k, v in weights.items() if k.endswith(IGNORED_SUFFIXES)}
    out = {k: weights[k] for k in keys}
    dtypes = {}
    for key, value in out.items():
        name = value.dtype.name
        if name not in FLOAT_DTYPES:
            raise CheckpointError(f"{path}: {key} holds {name} values, not floating point")
        dtypes.setdefault(name, key)
    if not allow_nonfinite:
        bad = [k for k, v in out.items() if not np.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or Inf ({', '.join(bad[:3])}"
                                  f"{', ...' if len(bad) > 3 else ''}); pass allow_nonfinite=True to convert anyway")
    notes = []
    if keep_dtype:
        if len(dtypes) > 1:
            raise CheckpointError(f"{path}: mixed dtypes ({', '.join(f'{d} in {k}' for d, k in dtypes.items())}); "
                                  "keep_dtype=True needs one")
        (dtype,) = dtypes
        if target is not None and dtype not in target.dtypes:
            raise CheckpointError(f"{path}: {target.label} cannot store {dtype}; drop keep_dtype=True to write float32")
    elif set(dtypes) != {"float32"}:
        out = {k: v if v.dtype == np.float32 else v.astype(np.float32) for k, v in out.items()}
        notes.append(f"converted {', '.join(d for d in dtypes if d != 'float32')} to float32 (keep_dtype=True keeps it)")
    return {**out, **extras}, notes


def dtype_of(weights: Mapping[str, np.ndarray], spec: ResNetSpec) -> str:
    """The one floating dtype of a spec's tensors (``prepare`` has made it one)."""
    return weights[next(iter(canonical_shapes(spec)))].dtype.name


def as_float32(weights: Mapping[str, np.ndarray], spec: ResNetSpec) -> dict[str, np.ndarray]:
    """The spec's tensors upcast to float32 (exact for float16/bfloat16), for running a batch through them."""
    return {k: np.asarray(weights[k], dtype=np.float32) for k in canonical_shapes(spec)}
