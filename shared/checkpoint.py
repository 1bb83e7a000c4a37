"""Checkpoint files: formats chosen by suffix or content, the framework-free safetensors reader and writer, atomic writes.

Every reader returns the canonical dict (torchvision names and layouts, numpy). Framework
formats are handled by each implementation's ``checkpoint.py`` (``read_weights(path, fmt, spec=None)``
and ``write_weights(path, weights, spec, fmt, consume=False)``), imported only when a file of that
format is used; other libraries' formats that need no framework by a module of ``shared.libraries``
with the same two functions. A reader needs the ``spec`` the caller names only for files that store
variables by position (Keras 3 files too old to record layer names, keras-hub weights without their
preset). State_dicts under another library's names (``weights.NAMINGS``) are renamed here, whatever
read them. Untrusted input: whatever a reader trips over becomes one ``CheckpointError`` line naming
the file. Writes go to a temporary path beside the destination, renamed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import secrets
import shutil
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Mapping

import numpy as np

from . import frameworks, infer
from .errors import ArchitectureError, CheckpointError
from .spec import PRESETS, ResNetSpec, get_spec
from .weights import (
    IGNORED_SUFFIXES, NAMINGS, ParamTable, WeightMismatchError, canonical_layers, canonical_shapes, check_weights,
    recognise, to_canonical,
)

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
ONNX_OPSET = 18  # what torch's ONNX exporter (torchlib) writes natively


@dataclass(frozen=True)
class Format:
    """One checkpoint format: which implementation reads and writes it, and how its files are named."""

    name: str
    label: str
    framework: str | None  # short name of the implementation that handles it; None: ``library``, else this module
    suffixes: tuple[str, ...] = ()
    layout: Literal["file", "directory", "either"] = "file"
    library: str | None = None  # the module of shared.libraries that handles it without a framework
    naming: str | None = None  # the state_dict names (weights.NAMINGS) its files must have
    readable: bool = True
    writable: bool = True
    dtypes: tuple[str, ...] = FLOAT_DTYPES


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("torch", "PyTorch state_dict", "torch", (".pt", ".pth", ".bin", ".pth.tar")),
        Format("d2l", "d2l seed state_dict (PyTorch)", "torch", naming="d2l", writable=False),
        Format("safetensors", "safetensors (canonical)", None, (".safetensors",)),
        Format("keras", "Keras 3 model", "tf", (".keras",)),
        Format("keras-weights", "Keras 3 weights", "tf", (".weights.h5",)),
        # keras.applications builds float32 models
        Format("keras-app", "keras.applications Keras 3 weights", "tf", dtypes=("float32",)),
        # Keras 2 never had bfloat16, and its loaders do not know Keras 3's bfloat16 marker
        Format("keras-h5", "Keras 2 HDF5 weights (keras.applications)", "tf", (".h5",),
               dtypes=("float16", "float32", "float64")),
        Format("orbax", "Orbax checkpoint of the Flax NNX state", "jax", layout="directory"),
        Format("msgpack", "Flax msgpack of the NNX state", "jax", (".msgpack",)),
        # other libraries' checkpoints
        Format("hf", "Hugging Face transformers ResNet (save_pretrained directory)", None, layout="either", library="hf",
               naming="hf"),
        Format("timm", "timm ResNet state_dict", None, layout="either", library="timm"),
        Format("keras-hub", "keras-hub ResNet preset (save_to_preset directory)", None, layout="either",
               library="keras_hub"),
        Format("flax-linen", "Flax ImageNet example variables (linen)", "jax", layout="either"),
        # the exporter folds BN into the convs: nothing to read back
        Format("onnx", f"ONNX graph (opset {ONNX_OPSET})", "torch", (".onnx",), readable=False, dtypes=("float32",)),
    ]
}


@dataclass
class Checkpoint:
    """What a reader found: canonical weights, the architecture if the file records one, notes for the user."""

    weights: dict[str, np.ndarray]
    spec: ResNetSpec | None
    format: Format
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- formats


def suffix_of(path: Path) -> str:
    """'.weights.h5' for Keras weight files and '.pth.tar' for timm's training checkpoints (their own suffixes),
    else the last suffix, lower-cased."""
    name = path.name.lower()
    return next((s for s in (".weights.h5", ".pth.tar") if name.endswith(s)), path.suffix.lower())


def detect_format(path: str | os.PathLike, fmt: str | None = None, *, writing: bool = False, option: str = "fmt") -> Format:
    """The format named by ``fmt``, else the one the path's suffix (or being a directory) implies.

    ``option`` is the caller's name for ``fmt``, for the message that asks for it."""
    path = Path(path)
    if fmt is not None:
        if fmt not in FORMATS:
            raise CheckpointError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        found = FORMATS[fmt]
        if writing and not found.writable:
            raise CheckpointError(f"{path}: {found.label} can be read but not written")
        if not writing and not found.readable:
            raise CheckpointError(f"{path}: {found.label} can be written but not read")
        return found
    suffix = suffix_of(path)
    # another library's files say so in their config or their names
    guess = None if writing or not path.exists() else sniff(path)
    if guess is not None and FORMATS[guess].library is not None:
        return FORMATS[guess]
    # a directory, or a new path without a suffix, is an Orbax checkpoint
    if path.is_dir() or (writing and not suffix and not path.exists()):
        return FORMATS["orbax"]
    for found in FORMATS.values():
        if suffix in found.suffixes:
            return found
    if not writing and not path.exists():
        raise CheckpointError(f"{path}: no such file")
    hint = f"; it looks like {FORMATS[guess].label}" if not writing and (guess := sniff(path)) else ""
    choices = ", ".join(n for n, f in FORMATS.items() if (f.writable if writing else f.readable))
    raise CheckpointError(f"{path}: unknown checkpoint suffix {suffix or '(none)'!r}{hint}; pass {option}=FORMAT ({choices})")


def sniff(path: Path) -> str | None:
    """The format a file's first bytes (a directory's config) suggest; None if nothing fits. A hint, except that
    another library's config or names choose its format when none is named."""
    try:
        if path.is_dir():
            if (path / "config.json").is_file():
                return library_of(json.loads((path / "config.json").read_text()))
            return "orbax" if (path / "_CHECKPOINT_METADATA").exists() or (path / "_METADATA").exists() else None
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith(b"\x89HDF\r\n\x1a\n"):
            import h5py

            with h5py.File(path, "r") as h5:
                # a keras-hub ImageClassifier saves its backbone as a nested model
                return "keras-hub" if "layers/res_net_backbone" in h5 else "keras-weights"
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            if "config.json" in names:
                return "keras"
            return "torch" if any(n.endswith("data.pkl") for n in names) else None
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5: torch's legacy format
            return "torch"
        if len(head) >= 9 and head[8:9] == b"{" and (end := 8 + struct.unpack("<Q", head[:8])[0]) <= size:
            with open(path, "rb") as f:
                keys = json.loads(f.read(end)[8:]) if end <= 1 << 24 else {}
            return "hf" if NAMINGS["hf"].recognises(keys) else "safetensors"
        if head and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):  # a msgpack map
            return "msgpack"
    except Exception:  # a hint only: a file too broken to guess at gets none
        return None
    return None


# ----------------------------------------------------------------------------- reading


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its first non-empty line, or its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(text) > 160 and (end := text.find(". ", 20)) > 0:
        text = text[:end]  # libraries append advice to the first sentence
    return text if len(text) <= 200 else text[:197] + "..."


def overclaims(declared: int, stored: int) -> bool:
    """Arrays far larger than the bytes that store them: weights hardly compress, so that is a
    compression bomb (or missing chunks a reader would fill in), to be refused."""
    return declared > 16 * stored + (1 << 20)


def library_of(config: Mapping) -> str | None:
    """The library whose config.json this is: Hugging Face (any model type), keras-hub or timm; None if none."""
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("model_type"), str):
        return "hf"
    if str(config.get("registered_name", "")).startswith("keras_hub>"):
        return "keras-hub"
    return "timm" if isinstance(config.get("architecture"), str) else None


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


def read(
    path: str | os.PathLike, fmt: str | Format | None = None, arch: str | ResNetSpec | None = None, *, option: str = "fmt",
) -> Checkpoint:
    """Read any supported file into canonical weights; every failure is one CheckpointError line.

    ``arch`` is used only by files that cannot be read without it; ``architecture`` checks the result against it.
    """
    path = Path(path)
    fmt = fmt if isinstance(fmt, Format) else detect_format(path, fmt, option=option)
    check_source(path, fmt)
    reader = _backend(fmt).read_weights if fmt.framework or fmt.library else read_safetensors
    try:
        ckpt = reader(path, fmt.name, None if arch is None else get_spec(arch))
    except CheckpointError:
        raise
    except Exception as exc:  # untrusted bytes: whatever a library trips over is a bad file, not a crash
        guess = sniff(path)
        hint = f"; it looks like {FORMATS[guess].label} (pass {option}={guess})" if guess and guess != fmt.name else ""
        raise CheckpointError(f"{path}: not a readable {fmt.label}: {one_line(exc)}{hint}") from exc
    bad = [k for k, v in ckpt.weights.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not named arrays: {', '.join(map(str, bad[:3]))}")
    weights, naming = recognise(ckpt.weights)
    if fmt.naming and naming != fmt.naming:
        expected = NAMINGS[fmt.naming]
        raise CheckpointError(f"{path}: not a {expected.label} state_dict (no {' and '.join(expected.signature)})")
    if naming:
        ckpt.weights = weights
        ckpt.notes.append(f"renamed the {NAMINGS[naming].label} state_dict's keys to torchvision's")
    return ckpt


def _backend(fmt: Format):
    """The module that reads and writes ``fmt``: a framework's checkpoint backend, or a module of shared.libraries."""
    if fmt.framework is not None:
        return frameworks.load_checkpoints(fmt.framework)
    return importlib.import_module(f"{__package__}.libraries.{fmt.library}")


def load(
    path: str | os.PathLike, fmt: str | None = None, arch: str | ResNetSpec | None = None,
) -> tuple[dict[str, np.ndarray], ResNetSpec | None]:
    """(canonical weights, the architecture the file records or None); framework formats import their framework.

    ``arch`` is needed only for Keras 3 files too old to record layer names (read by position)."""
    ckpt = read(path, fmt, arch)
    return ckpt.weights, ckpt.spec


def load_for_model(path: str | os.PathLike, arch: str | ResNetSpec | None = None) -> tuple[ResNetSpec, dict]:
    """What an implementation's ``load_checkpoint`` builds from: the spec (``arch``, the file's record, or inferred)
    and the file's weights, tensors as float32 (counters such as num_batches_tracked kept)."""
    path = Path(path)
    ckpt = read(path, arch=arch)
    spec, _ = architecture(ckpt, path, arch)
    return spec, {**ckpt.weights, **as_float32(ckpt.weights, spec)}


def read_safetensors(path: Path, fmt: str = "safetensors", spec: ResNetSpec | None = None) -> Checkpoint:
    """A safetensors file as numpy arrays, with the architecture from its metadata when recorded."""
    from safetensors import safe_open

    _enable_bfloat16()
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata() or {}
        weights = {key: f.get_tensor(key) for key in f.keys()}
    return Checkpoint(weights, spec_from_metadata(metadata, path), FORMATS[fmt])


def _enable_bfloat16() -> None:
    # numpy learns the name 'bfloat16' from ml_dtypes (installed with JAX and TensorFlow)
    with contextlib.suppress(ImportError):
        import ml_dtypes  # noqa: F401


# ----------------------------------------------------------------------------- the architecture a file records

METADATA_ARCH, METADATA_OVERRIDES = "resnet_parity.arch", "resnet_parity.overrides"


def spec_to_metadata(spec: ResNetSpec) -> dict[str, str]:
    """String metadata naming the preset and every field that differs from it."""
    base = PRESETS.get(spec.name)
    fields = dataclasses.asdict(spec)
    if base is None:
        overrides = {k: v for k, v in fields.items() if k != "name"}
    else:
        overrides = {k: v for k, v in fields.items() if v != dataclasses.asdict(base)[k]}
    return {METADATA_ARCH: spec.name, METADATA_OVERRIDES: json.dumps(overrides)}


def spec_from_metadata(metadata: Mapping[str, str], path: Path) -> ResNetSpec | None:
    """The spec written by ``spec_to_metadata``, or None when the metadata records none."""
    if METADATA_ARCH not in metadata:
        return None
    return spec_from_fields(metadata[METADATA_ARCH], json.loads(metadata.get(METADATA_OVERRIDES, "{}")), path)


def spec_from_fields(name: str, fields: Mapping, path: Path) -> ResNetSpec:
    """A preset with overrides, or a whole spec, from a file's JSON; a bad record is a CheckpointError."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if isinstance(fields.get("conv_bias"), bool):  # written before conv_bias named its choice
        fields["conv_bias"] = "all" if fields["conv_bias"] else "unnormalized"
    try:
        if name in PRESETS:
            return get_spec(name, **fields)
        return ResNetSpec(name=name, **fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: records an invalid architecture {name!r}: {one_line(exc)}") from exc


# ----------------------------------------------------------------------------- framework names -> canonical

_KINDS = [
    (re.compile(r"conv1|layer\d+\.\d+\.(conv\d+|downsample\.0)"), ("conv",)),
    (re.compile(r"bn1|post_bn|layer\d+\.\d+\.(bn\d+|downsample\.2)"), ("bn",)),
    # a projection's BN, or ResNet-D's conv (after the average pool at downsample.0)
    (re.compile(r"layer\d+\.\d+\.downsample\.1"), ("conv", "bn")),
    (re.compile(r"fc"), ("linear",)),
]


def canonical_kinds(module: str) -> tuple[str, ...]:
    """The layer kinds ('conv', 'bn', 'linear') a canonical module path can name; the variables decide between two."""
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


# ----------------------------------------------------------------------------- checks on the weights


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


def architecture(ckpt: Checkpoint, path: Path, arch: str | ResNetSpec | None = None) -> tuple[ResNetSpec, list[str]]:
    """The spec for these weights: ``arch`` if given, else the file's record, else inferred; checked strictly."""
    notes = []
    if arch is not None:
        spec = get_spec(arch)
        if ckpt.spec is not None and ckpt.spec != spec:
            notes.append(f"the file records {ckpt.spec.name}; using {spec.name} as asked")
    elif ckpt.spec is not None:
        spec = ckpt.spec
        if sum(spec.layers) > len(ckpt.weights):  # every block has tensors; also keeps a forged record from stalling us
            raise CheckpointError(f"{path}: records {spec.name} with {sum(spec.layers)} blocks, "
                                  f"but holds only {len(ckpt.weights)} tensors")
        notes.append(f"architecture {spec.name}, as the file records it")
    else:
        try:
            found = infer.infer(ckpt.weights)
        except ArchitectureError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        spec = found.spec
        notes += found.notes()
    try:
        check_weights(spec, ckpt.weights)
    except WeightMismatchError as err:
        hint = ""
        if arch is not None:
            with contextlib.suppress(ArchitectureError):
                hint = f"; the weights look like {infer.infer(ckpt.weights).describe()}"
        raise CheckpointError(f"{path}: weights do not fit {spec.name}: {mismatch_line(err)}{hint}") from err
    return spec, notes


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


# ----------------------------------------------------------------------------- writing


def check_destination(path: Path, *, force: bool) -> None:
    """Refuse, before any work, a destination that exists (without force) or cannot be created."""
    if path.exists() and not force:
        raise CheckpointError(f"{path}: already exists (pass force=True to overwrite)")
    parent = path.parent
    if not parent.exists():
        raise CheckpointError(f"{path}: cannot write: directory {parent} does not exist")
    if not parent.is_dir():
        raise CheckpointError(f"{path}: cannot write: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: cannot write: permission denied in {parent}")


STAGING = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}-(.+)")  # .tmp-<pid>-<token>-<destination name>


class Staged:
    """A temporary path beside the destination; ``commit`` renames it into place, else it is removed.

    The name carries the writing process's id, so a later write to the same destination can remove
    what a killed one left behind (``remove_stale``).
    """

    def __init__(self, dst: Path):
        self.dst = dst
        # same directory (so the rename is atomic), same name at the end (so suffix rules still apply)
        self.path = dst.parent / f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{dst.name}"
        self.committed = False

    def remove_stale(self) -> list[Path]:
        """Remove this destination's staging paths whose writer no longer runs; returns them."""
        stale = []
        for entry in self.dst.parent.iterdir():
            found = STAGING.fullmatch(entry.name)
            if found and found[2] == self.dst.name and not _running(int(found[1])):
                _remove(entry)
                stale.append(entry)
        return stale

    def commit(self) -> None:
        if not self.path.exists():
            raise CheckpointError(f"{self.dst}: the writer produced no output")
        honour_umask(self.path)
        if self.dst.is_dir() or (self.dst.exists() and self.path.is_dir()):
            # a directory cannot be replaced in one rename: move the old one aside first
            old = self.dst.parent / f".old-{secrets.token_hex(4)}-{self.dst.name}"
            os.rename(self.dst, old)
            os.rename(self.path, self.dst)
            _remove(old)
        else:
            os.replace(self.path, self.dst)
        self.committed = True


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def honour_umask(path: Path) -> None:
    """Give what a writer created the permissions the user's umask asks for (some libraries write 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for entry in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def staged(dst: str | os.PathLike, *, force: bool) -> Iterator[Staged]:
    """Stage a write beside ``dst``: nothing appears at ``dst`` unless ``commit()`` is called."""
    dst = Path(dst)
    check_destination(dst, force=force)
    stage = Staged(dst)
    stage.remove_stale()
    try:
        yield stage
    finally:
        if not stage.committed:
            _remove(stage.path)


def write_to(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: Format, dst: Path | None = None, *,
    consume: bool = False,
) -> None:
    """Write ``fmt`` at ``path`` (no staging); failures are one CheckpointError line naming ``dst``.

    With ``consume``, the writer may empty ``weights`` (a dict no one else needs) as it converts them:
    where the framework keeps its own copy in another layout, that halves the memory a write takes.
    """
    writer = _backend(fmt).write_weights if fmt.framework or fmt.library else write_safetensors
    try:
        writer(path, weights, spec, fmt.name, consume=consume)
    except CheckpointError as exc:
        if dst is None or str(path) not in str(exc):
            raise
        raise CheckpointError(str(exc).replace(str(path), str(dst))) from exc  # the file the caller asked for
    except Exception as exc:
        raise CheckpointError(f"{dst or path}: cannot write {fmt.label}: {one_line(exc)}") from exc


def write(
    path: str | os.PathLike, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str | None = None, *,
    force: bool = False,
) -> Format:
    """Write canonical weights atomically (a temporary file beside ``path``, renamed at the end)."""
    path = Path(path)
    found = detect_format(path, fmt, writing=True)
    with staged(path, force=force) as stage:
        write_to(stage.path, weights, spec, found, dst=path)
        stage.commit()
    return found


def save(
    path: str | os.PathLike, weights: Mapping[str, np.ndarray], spec: ResNetSpec | str, fmt: str | None = None,
) -> None:
    """Write canonical weights in the format of ``path``'s suffix, replacing an existing file atomically."""
    spec = get_spec(spec)
    check_weights(spec, weights)
    write(path, weights, spec, fmt, force=True)


def write_safetensors(
    path: Path, weights: Mapping[str, np.ndarray], spec: ResNetSpec, fmt: str = "safetensors", *, consume: bool = False,
) -> None:
    """The canonical tensors in forward order, the architecture in the metadata ('format': 'pt' for transformers/timm).

    The file is the canonical layout: there is nothing to release early, so ``consume`` changes nothing.
    """
    from safetensors.numpy import save_file

    _enable_bfloat16()
    keys = [f"{layer.path}.{param}" for layer in canonical_layers(spec) for param in layer.shapes]
    tensors = {key: np.ascontiguousarray(weights[key]) for key in keys}
    save_file(tensors, str(path), metadata={"format": "pt", **spec_to_metadata(spec)})
