"""Fuzzing: a few hundred truncated and bit-flipped files through every reader give clean errors, never crashes.

A clean outcome is a CheckpointError whose message is one line starting with the file's path, or,
for a bit flip that lands in tensor data, a read whose result still passes every check. A truncated
file must never read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from shared import checkpoint
from shared.checkpoint import CheckpointError
from shared.cli import main
from shared.spec import get_spec
from shared.weights import randomize

# A failed Orbax restore abandons TensorStore reads; pytest reports each as they are collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SPEC = get_spec("resnet20")  # about 1 MB per file
# other libraries' formats hold only their own networks: small ones (keras-hub's first stack has 64 filters)
SMALL = dict(layers=(1, 1), strides=(1, 2), num_classes=10)
SPECS = {
    "hf": get_spec("resnet18", **SMALL, widths=(16, 32), stem_width=16),
    "keras-hub": get_spec("resnet18", **SMALL, widths=(64, 128)),
    "flax-linen": get_spec("resnet18", **SMALL, widths=(16, 32), stem_width=16, padding="tf_same"),
}
CASES = 40  # per format: half truncations, half bit flips
NAMES = {
    "torch": "f.pt", "safetensors": "f.safetensors", "keras": "f.keras", "keras-weights": "f.weights.h5",
    "msgpack": "f.msgpack", "orbax": "f_orbax", "keras-h5": "f.h5",
    "keras-by-position": "old.weights.h5",  # a Keras 3 file without layer names, read by position with the arch
    "hf": "f_hf", "timm": "f_timm.pth", "keras-hub": "f_keras_hub", "flax-linen": "f_linen.msgpack",
}
FORMAT = {"keras-by-position": "keras-weights"}
SAVED_AS = {"timm": "torch"}  # timm writes only its own models; its reader takes any state_dict
DIRECTORIES = ("orbax", "hf", "keras-hub")  # a case mutates one of their files, maybe one a read never needs


def keras2_layout(path: Path) -> None:
    """A Keras 2 file with every keras.applications ResNet50 variable, each of one element: the parser runs in full."""
    from tensorflow_impl.keras_applications import variable_table

    by_layer: dict[str, list[tuple[str, int]]] = {}
    for name, perm in variable_table("keras_resnet50").values():
        layer, attr = name.split("/")
        by_layer.setdefault(layer, []).append((attr, len(perm) if perm else 1))
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = np.array([n.encode() for n in by_layer])
        for layer, attrs in by_layer.items():
            group = h5.create_group(layer)
            group.attrs["weight_names"] = np.array([f"{layer}/{a}:0".encode() for a, _ in attrs])
            for attr, ndim in attrs:
                group.create_dataset(f"{layer}/{attr}:0", data=np.ones((1,) * ndim, np.float32))


@pytest.fixture(scope="module")
def originals(impls, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("originals")
    for fmt, name in NAMES.items():
        if fmt == "keras-h5":
            keras2_layout(folder / name)
        else:
            spec = SPECS.get(fmt, SPEC)
            checkpoint.save(folder / name, randomize(spec, seed=13), spec, SAVED_AS.get(fmt, FORMAT.get(fmt, fmt)))
    with h5py.File(folder / NAMES["keras-by-position"], "r+") as h5:
        h5.visititems(lambda _, obj: obj.attrs.__delitem__("name") if "name" in obj.attrs else None)
    return {fmt: folder / name for fmt, name in NAMES.items()}


def mutate(data: bytes, case: int, rng: np.random.Generator) -> bytes:
    """Even cases truncate (some near the end, where zip directories live); odd cases flip 1-16 bits."""
    if case % 2 == 0:
        cut = int(rng.integers(0, len(data))) if case % 4 == 0 else len(data) - int(rng.integers(1, min(len(data), 4096)))
        return data[:cut]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 17))):
        # headers and directories sit at the ends; most bytes are tensor data
        span = min(len(out), 4096)
        pos = int(rng.integers(0, len(out))) if rng.random() < 0.3 else \
            int(rng.integers(0, span)) if rng.random() < 0.5 else len(out) - 1 - int(rng.integers(0, span))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def make_case(original: Path, case: int, folder: Path, rng: np.random.Generator) -> Path:
    """A mutated copy; for an Orbax directory, one of its files is the one mutated."""
    target = folder / f"case{case}-{original.name}"
    if original.is_dir():
        shutil.copytree(original, target)
        files = sorted(p for p in target.rglob("*") if p.is_file())
        victim = files[case // 2 % len(files)]
    else:
        victim = target
        shutil.copyfile(original, target)
    victim.write_bytes(mutate(victim.read_bytes(), case, rng))
    return target


def outcome(path: Path, fmt: str) -> str | None:
    """None if the file read and checked out; the error message if it was refused cleanly. Anything else raises."""
    try:
        arch = SPEC if fmt == "keras-by-position" else None
        checkpoint.Source.open(path, FORMAT.get(fmt, fmt)).read(arch).prepared()
    except CheckpointError as err:
        return str(err)
    return None


@pytest.mark.parametrize("fmt", list(NAMES))
def test_mutated_files_give_clean_errors(originals, tmp_path, fmt):
    rng = np.random.default_rng(list(NAMES).index(fmt))
    unclean, truncated_reads, refused = [], [], 0
    for case in range(CASES):
        path = make_case(originals[fmt], case, tmp_path, rng)
        try:
            message = outcome(path, fmt)
        except Exception as exc:  # noqa: BLE001 - the point: anything but CheckpointError is a finding
            unclean.append(f"case {case}: {type(exc).__name__}: {exc}"[:300])
            continue
        if message is None:
            if case % 2 == 0 and fmt not in DIRECTORIES:  # a directory's case may truncate a file a read never needs
                truncated_reads.append(case)
            continue
        refused += 1
        if "\n" in message or not message.startswith(str(path)):
            unclean.append(f"case {case}: not one line naming the file: {message!r}")
    assert not unclean, "\n".join(unclean)
    assert not truncated_reads, f"truncated files read without error: cases {truncated_reads}"
    # a single file refuses every truncation at least; a directory also holds files a read never needs
    assert refused >= (CASES // 2 if fmt not in DIRECTORIES else CASES // 4)


@pytest.mark.parametrize("fmt", list(NAMES))
def test_a_mutated_file_through_the_command_line(originals, tmp_path, capsys, fmt):
    path = make_case(originals[fmt], 2, tmp_path, np.random.default_rng(0))
    from_format = ["--from", FORMAT.get(fmt, fmt)] if fmt not in DIRECTORIES else []
    if fmt == "keras-by-position":
        from_format += ["--arch", SPEC.name]
    assert main(["convert", str(path), str(tmp_path / "out.safetensors"), *from_format]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err and str(path) in err
    assert not (tmp_path / "out.safetensors").exists()
