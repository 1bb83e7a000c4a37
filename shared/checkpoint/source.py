"""A checkpoint to read: a ``Source`` is opened once (its format detected, the path checked) and read once into
canonical weights, the architecture they are (named, recorded or inferred, and checked strictly) and notes.

Untrusted input: whatever a reader trips over becomes one ``CheckpointError`` line naming the file.
State_dicts under another library's names (``weights.NAMINGS``) are renamed here, whatever read them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import infer
from ..errors import ArchitectureError, CheckpointError, WeightMismatchError, one_line
from ..spec import ResNetSpec, get_spec
from ..weights import IGNORED_SUFFIXES, NAMINGS, canonical_shapes, check_weights, recognise
from .formats import FLOAT_DTYPES, FORMATS, Checkpoint, Format, detect_format, file_format, sniff


@dataclass
class Source:
    """A checkpoint file: ``open`` detects its format and checks the path; ``read`` fills in the rest."""

    path: Path
    format: Format  # as detected; a reader may tell it more precisely (a msgpack of the Flax example's variables)
    option: str = "fmt"  # the caller's name for the format argument, for the messages that ask for it
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # canonical names, the file's dtypes and counters
    recorded: ResNetSpec | None = None  # the architecture the file records
    spec: ResNetSpec | None = None  # the architecture of the weights: named, recorded or inferred; checked
    notes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, fmt: str | Format | None = None, *, option: str = "fmt") -> Source:
        """The file at ``path`` in format ``fmt`` (default: by suffix and content); fails early, in one line, on a
        missing, empty or wrong-kind path. ``option`` names ``fmt`` in the messages."""
        path = Path(path)
        found = fmt if isinstance(fmt, Format) else detect_format(path, fmt, option=option)
        check_source(path, found)
        return cls(path, found, option)

    def read(self, arch: str | ResNetSpec | None = None) -> Source:
        """Read the weights and settle their architecture: ``arch`` if given, else the file's record, else inferred.

        ``arch`` also reaches the reader, which needs it only for files that store variables by position."""
        found = self._read(None if arch is None else get_spec(arch))
        self.weights, self.recorded, self.format = found.weights, found.spec, found.format
        self.spec, notes = self._architecture(arch)
        self.notes = found.notes + notes
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
                raise CheckpointError(f"{path}: {exc}") from exc
            spec = found.spec
            notes += found.notes()
        try:
            check_weights(spec, weights)
        except WeightMismatchError as err:
            hint = ""
            if arch is not None:
                with contextlib.suppress(ArchitectureError):
                    hint = f"; the weights look like {infer.infer(weights).describe()}"
            raise CheckpointError(f"{path}: weights do not fit {spec.name}: {mismatch_line(err)}{hint}") from err
        return spec, notes


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
