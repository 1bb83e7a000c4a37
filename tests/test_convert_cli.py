"""``resnet-parity convert`` end to end: verification that can fail, and every bad input as one line, exit 2, no output."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared import checkpoint
from shared.cli import main
from shared.spec import get_spec
from shared.weights import canonical_shapes, randomize

SPEC = get_spec("resnet18", stem_width=8, widths=(8, 16, 32, 64), num_classes=10)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights() -> dict:
    return randomize(SPEC, seed=11)


@pytest.fixture(scope="module")
def source(impls, weights, tmp_path_factory) -> Path:
    """A plain torch state_dict, as torchvision users hold them."""
    path = tmp_path_factory.mktemp("src") / "model.pth"
    checkpoint.save(path, weights, SPEC)
    return path


def convert(capsys, *args) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, tmp_path: Path, *args, match: str) -> str:
    """Exit 2, one stderr line naming the problem, no traceback, nothing new in tmp_path."""
    before = set(tmp_path.iterdir())
    code, out, err = convert(capsys, *args)
    assert code == 2, (out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("resnet-parity convert: error: ") and match in err, err
    assert set(tmp_path.iterdir()) == before
    return err


# ----------------------------------------------------------------------------- working conversions


@pytest.mark.parametrize("name", ["out.keras", "out_orbax", "out.safetensors"])
def test_convert_verifies_and_writes(capsys, source, weights, tmp_path, name):
    code, out, err = convert(capsys, source, tmp_path / name)
    assert code == 0, err
    assert "architecture inferred from the weights: resnet18 with stem_width=8" in out
    assert "weights bit-identical: yes -> PASS" in out
    got, spec = checkpoint.load(tmp_path / name)
    assert spec == SPEC
    for key in canonical_shapes(SPEC):
        assert np.array_equal(got[key], weights[key]), key


def test_json_report(capsys, source, tmp_path):
    code, out, _ = convert(capsys, source, tmp_path / "out.msgpack", "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["written"] and report["schema_version"] == 1
    assert (report["from"], report["to"], report["arch"], report["dtype"]) == ("torch", "msgpack", "resnet18", "float32")
    assert report["verification"]["frameworks"] == ["torch", "jax"]
    assert report["verification"]["relative_error"] <= report["verification"]["tolerance"] == 1e-5
    assert report["tensors"] == len(canonical_shapes(SPEC))


def test_the_command_line_entry_point_runs(source, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "convert", str(source), str(tmp_path / "x.safetensors"), "--arch", "resnet18"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # --arch resnet18 is the full-width network: the narrowed file does not fit it
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "do not fit resnet18" in result.stderr
    assert "the weights look like resnet18 with stem_width=8" in result.stderr


def test_verification_notices_a_broken_mapping(capsys, source, tmp_path, impls, monkeypatch):
    # read Keras BN statistics in the wrong order: the file is fine, the reading is not, and the check must say so
    tf_checkpoint = impls["tf"].checkpoint
    monkeypatch.setitem(tf_checkpoint.KERAS_ORDER, "bn", ("weight", "bias", "running_var", "running_mean"))
    code, out, _ = convert(capsys, source, tmp_path / "out.weights.h5")
    assert code == 1
    assert "weights bit-identical: no -> FAIL" in out and "was not written" in out
    assert list(tmp_path.iterdir()) == []


def test_verification_notices_a_skipped_transpose(capsys, source, tmp_path, impls, monkeypatch):
    jax_weights = impls["jax"].weights  # the model adapter: the file itself is written right
    params = {kind: dict(table) for kind, table in jax_weights.PARAMS.items()}
    params["conv"]["weight"] = ("kernel", (3, 2, 1, 0))  # HWIO loaded as WHIO: square kernels fit either way
    monkeypatch.setattr(jax_weights, "PARAMS", params)
    code, out, _ = convert(capsys, source, tmp_path / "out.msgpack", "--json")
    report = json.loads(out)
    assert code == 1 and report["verification"]["relative_error"] > 1e-3 and not report["written"]
    assert list(tmp_path.iterdir()) == []


def test_keras_file_without_layer_names_converts_with_arch(capsys, impls, tmp_path):
    import h5py

    spec = get_spec("resnet20")
    weights = randomize(spec, seed=12)
    checkpoint.save(tmp_path / "old.weights.h5", weights, spec)
    with h5py.File(tmp_path / "old.weights.h5", "r+") as h5:  # as an older Keras 3 wrote it
        h5.visititems(lambda name, obj: obj.attrs.__delitem__("name") if "name" in obj.attrs else None)
    assert_refused(capsys, tmp_path, tmp_path / "old.weights.h5", tmp_path / "out.pt", match="pass --arch NAME")
    code, out, err = convert(capsys, tmp_path / "old.weights.h5", tmp_path / "out.pt", "--arch", "resnet20")
    assert code == 0, err
    assert "read by position as resnet20" in out and "weights bit-identical: yes -> PASS" in out
    got, _ = checkpoint.load(tmp_path / "out.pt")
    assert all(np.array_equal(got[k], weights[k]) for k in canonical_shapes(spec))


def test_training_checkpoint_with_module_prefix(capsys, impls, weights, tmp_path):
    import torch

    wrapped = {"epoch": 90, "state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in weights.items()}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    code, out, err = convert(capsys, tmp_path / "ckpt.pth", tmp_path / "out.safetensors", "--no-verify")
    assert code == 0, err
    assert "'state_dict' entry" in out and "'module.' prefix" in out and "not verified" in out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_converted_or_kept(capsys, impls, weights, tmp_path, dtype):
    import torch

    half = {k: torch.from_numpy(v).to(getattr(torch, dtype)) for k, v in weights.items()}
    torch.save(half, tmp_path / "half.pt")
    code, out, err = convert(capsys, tmp_path / "half.pt", tmp_path / "f32.weights.h5")
    assert code == 0, err
    assert f"converted {dtype} to float32" in out
    assert checkpoint.load(tmp_path / "f32.weights.h5")[0]["conv1.weight"].dtype == np.float32
    code, out, err = convert(capsys, tmp_path / "half.pt", tmp_path / "kept_orbax", "--keep-dtype")
    assert code == 0 and "PASS" in out, err
    assert checkpoint.load(tmp_path / "kept_orbax")[0]["conv1.weight"].dtype.name == dtype


def test_nonfinite_weights_convert_when_allowed(capsys, impls, weights, tmp_path):
    broken = {**weights, "fc.bias": weights["fc.bias"].copy()}
    broken["fc.bias"][0] = np.nan
    checkpoint.save(tmp_path / "nan.safetensors", broken, SPEC)
    code, out, err = convert(capsys, tmp_path / "nan.safetensors", tmp_path / "out.pt", "--allow-nonfinite")
    assert code == 0 and "PASS" in out, err
    assert np.isnan(checkpoint.load(tmp_path / "out.pt")[0]["fc.bias"][0])


def test_force_overwrites(capsys, source, tmp_path):
    (tmp_path / "out.pt").write_bytes(b"old")
    code, _, err = convert(capsys, source, tmp_path / "out.pt", "--force", "--no-verify")
    assert code == 0, err
    assert checkpoint.load(tmp_path / "out.pt")[1] is None and (tmp_path / "out.pt").stat().st_size > 3


# ----------------------------------------------------------------------------- bad input: one line, exit 2, nothing written


class RunsCode:
    """Unpickling this calls os.system: the payload of a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol,match", [
    (2, "refused: its pickle asks for posix.system"),
    (4, "weights-only unpickling stopped: Unsupported operand"),  # stops at protocol 4's framing, before the call
])
def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(capsys, impls, tmp_path, protocol, match):
    marker = tmp_path.parent / f"{tmp_path.name}-pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv1.weight": RunsCode(marker)}, f, protocol=protocol)
    assert_refused(capsys, tmp_path, tmp_path / "evil.pth", tmp_path / "out.pt", match=match)
    assert not marker.exists()
    pickle.loads(pickle.dumps(RunsCode(marker)))  # the payload is live: unpickled plainly, it runs
    assert marker.exists()


def test_a_torch_saved_payload_is_refused_and_nothing_runs(capsys, impls, tmp_path):
    import torch

    marker = tmp_path.parent / f"{tmp_path.name}-pwned"
    torch.save({"conv1.weight": RunsCode(marker)}, tmp_path / "evil.pt")
    assert_refused(capsys, tmp_path, tmp_path / "evil.pt", tmp_path / "out.keras", match="nothing in the file was run")
    assert not marker.exists()


def test_a_pickled_whole_model_is_refused(capsys, impls, tmp_path):
    import torch

    torch.save(impls["torch"].build_model("resnet20"), tmp_path / "model.pt")
    assert_refused(capsys, tmp_path, tmp_path / "model.pt", tmp_path / "out.pt",
                   match="asks for pytorch_impl.resnet.ResNet")


@pytest.mark.parametrize("name", ["empty.pt", "empty.safetensors", "empty.keras", "empty.weights.h5", "empty.msgpack"])
def test_empty_file(capsys, tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert_refused(capsys, tmp_path, tmp_path / name, tmp_path / "out.pt", match=f"{name}: empty file")


def test_empty_orbax_directory(capsys, tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert_refused(capsys, tmp_path, tmp_path / "ckpt", tmp_path / "out.pt", match="ckpt: empty directory")


@pytest.mark.parametrize("fmt,name", [
    ("torch", "w.pt"), ("safetensors", "w.safetensors"), ("keras", "w.keras"), ("keras-weights", "w.weights.h5"),
    ("msgpack", "w.msgpack"),
])
def test_truncated_file(capsys, impls, weights, tmp_path, fmt, name):
    checkpoint.save(tmp_path / name, weights, SPEC)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    assert_refused(capsys, tmp_path, tmp_path / name, tmp_path / "out.safetensors", match=f"{name}: ")


def test_truncated_orbax_directory(capsys, impls, weights, tmp_path):
    checkpoint.save(tmp_path / "ckpt", weights, SPEC)
    for path in (tmp_path / "ckpt").rglob("*"):
        if path.is_file() and path.stat().st_size > 10_000:  # the array data
            path.write_bytes(path.read_bytes()[:1000])
    assert_refused(capsys, tmp_path, tmp_path / "ckpt", tmp_path / "out.pt", match="ckpt: not a readable Orbax checkpoint")


def test_corrupted_header(capsys, weights, tmp_path):
    checkpoint.save(tmp_path / "w.safetensors", weights, SPEC)
    data = bytearray((tmp_path / "w.safetensors").read_bytes())
    data[20:40] = b"\xff" * 20
    (tmp_path / "w.safetensors").write_bytes(bytes(data))
    assert_refused(capsys, tmp_path, tmp_path / "w.safetensors", tmp_path / "out.pt",
                   match="w.safetensors: not a readable safetensors")


@pytest.mark.parametrize("real,label", [
    ("w.safetensors", "safetensors"), ("w.msgpack", "Flax msgpack"), ("w.keras", "Keras 3 model"),
])
def test_mislabelled_file_names_what_it_looks_like(capsys, impls, weights, tmp_path, real, label):
    checkpoint.save(tmp_path / real, weights, SPEC)
    (tmp_path / real).rename(tmp_path / "model.pt")
    err = assert_refused(capsys, tmp_path, tmp_path / "model.pt", tmp_path / "out.safetensors",
                         match="it looks like")
    assert "model.pt: not a " in err and label in err


def test_unknown_suffix_suggests_formats(capsys, source, tmp_path):
    (tmp_path / "model.ckpt").write_bytes(source.read_bytes())
    assert_refused(capsys, tmp_path, tmp_path / "model.ckpt", tmp_path / "out.pt",
                   match="unknown checkpoint suffix '.ckpt'; it looks like PyTorch state_dict; pass --from FORMAT")
    code, _, err = convert(capsys, tmp_path / "model.ckpt", tmp_path / "out.pt", "--from", "torch", "--no-verify")
    assert code == 0, err


def test_missing_source(capsys, tmp_path):
    assert_refused(capsys, tmp_path, tmp_path / "nothing.pt", tmp_path / "out.pt", match="nothing.pt: no such file")


def test_another_architectures_checkpoint(capsys, source, tmp_path):
    err = assert_refused(capsys, tmp_path, source, tmp_path / "out.pt", "--arch", "resnet50", match="do not fit resnet50: ")
    assert "missing (layer1.0.conv3.weight" in err and "the weights look like resnet18" in err


def test_a_checkpoint_of_something_else(capsys, impls, tmp_path):
    import torch

    torch.save({"encoder.layer.0.weight": torch.zeros(4, 4), "head.weight": torch.zeros(2, 4)}, tmp_path / "bert.pt")
    assert_refused(capsys, tmp_path, tmp_path / "bert.pt", tmp_path / "out.pt",
                   match="not a ResNet state: no 4-d conv1.weight")


def test_nonfinite_weights_are_refused(capsys, weights, tmp_path):
    broken = {**weights, "layer1.0.bn1.running_var": np.full_like(weights["layer1.0.bn1.running_var"], np.inf)}
    checkpoint.save(tmp_path / "inf.safetensors", broken, SPEC)
    assert_refused(capsys, tmp_path, tmp_path / "inf.safetensors", tmp_path / "out.pt",
                   match="1 tensors hold NaN or Inf (layer1.0.bn1.running_var); pass --allow-nonfinite")


def test_existing_destination_is_refused(capsys, source, tmp_path):
    (tmp_path / "out.keras").write_bytes(b"precious")
    assert_refused(capsys, tmp_path, source, tmp_path / "out.keras", match="out.keras: already exists (pass --force")
    assert (tmp_path / "out.keras").read_bytes() == b"precious"


@pytest.mark.parametrize("where,match", [
    ("missing/out.pt", "cannot write: directory"), ("file/out.pt", "is not a directory"),
])
def test_unwritable_destination(capsys, source, tmp_path, where, match):
    (tmp_path / "file").write_bytes(b"")
    assert_refused(capsys, tmp_path, source, tmp_path / where, match=match)


def test_destination_that_is_the_source(capsys, source, tmp_path):
    (tmp_path / "same.pt").write_bytes(source.read_bytes())
    assert_refused(capsys, tmp_path, tmp_path / "same.pt", tmp_path / "same.pt", "--force",
                   match="same.pt: is SRC (")


def test_a_writer_failing_midway_leaves_no_output(capsys, source, tmp_path, impls, monkeypatch):
    jax_checkpoint = impls["jax"].checkpoint

    def fail_midway(path, tree, spec):
        (path / "d").mkdir(parents=True)
        (path / "d" / "chunk").write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jax_checkpoint, "write_orbax", fail_midway)
    assert_refused(capsys, tmp_path, source, tmp_path / "ckpt", match="ckpt: cannot write Orbax checkpoint")


def test_keep_dtype_into_a_format_that_cannot_hold_it(capsys, impls, weights, tmp_path):
    import torch

    torch.save({k: torch.from_numpy(v).bfloat16() for k, v in weights.items()}, tmp_path / "bf16.pt")
    assert_refused(capsys, tmp_path, tmp_path / "bf16.pt", tmp_path / "out.weights.h5", "--to", "keras-app", "--keep-dtype",
                   match="cannot store bfloat16")


def test_debug_shows_the_traceback_and_keeps_exit_2(capsys, source, tmp_path):
    assert main(["convert", "--debug", str(source), str(tmp_path / "out.pt"), "--arch", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "CheckpointError" in err and "do not fit resnet50" in err.splitlines()[-1]


def test_a_zip_bomb_keras_file_is_refused(capsys, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "bomb.keras", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(64 << 20))  # 64 MB of zeros in a few kB
    assert (tmp_path / "bomb.keras").stat().st_size < 1 << 20
    assert_refused(capsys, tmp_path, tmp_path / "bomb.keras", tmp_path / "out.pt", match="would expand to 67,108,864 bytes")


def test_an_hdf5_compression_bomb_is_refused(capsys, impls, weights, tmp_path):
    import h5py

    checkpoint.save(tmp_path / "w.weights.h5", weights, SPEC)
    with h5py.File(tmp_path / "w.weights.h5", "r+") as h5:
        del h5["fc/vars/0"]
        # 16 GB declared, nothing stored: reading it would allocate all of it
        h5["fc/vars"].create_dataset("0", shape=(1 << 16, 1 << 16), dtype="f4", chunks=(1024, 1024), compression="gzip")
    assert_refused(capsys, tmp_path, tmp_path / "w.weights.h5", tmp_path / "out.pt",
                   match="declares 17,179,869,184 bytes but stores 0; refused")


def test_an_orbax_checkpoint_declaring_more_than_it_stores_is_refused(impls, tmp_path):
    from types import SimpleNamespace

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "data").write_bytes(bytes(1000))
    huge = [SimpleNamespace(shape=(1 << 20, 1 << 10), dtype="float32")]
    with pytest.raises(ValueError, match="declares 4,294,967,296 bytes of arrays but stores 1,000; refused"):
        impls["jax"].checkpoint._check_declared(huge, tmp_path / "ckpt")
    impls["jax"].checkpoint._check_declared([SimpleNamespace(shape=(250,), dtype="float32")], tmp_path / "ckpt")


def test_a_text_file_named_pth_is_called_text(capsys, tmp_path):
    (tmp_path / "notes.pth").write_text("hello\nworld\n")
    code, out, err = convert(capsys, tmp_path / "notes.pth", tmp_path / "out.safetensors")
    assert code == 2 and out == "" and "not a PyTorch checkpoint" in err and "it is text" in err


def test_outputs_honour_the_umask_and_stale_staging_is_removed(capsys, source, tmp_path):
    stale = tmp_path / ".tmp-999999999-0123abcd-out.safetensors"  # no such process: a killed conversion's
    stale.write_bytes(b"x" * 100)
    old = os.umask(0o027)
    try:
        code, _, _ = convert(capsys, source, tmp_path / "out.safetensors", "--no-verify")
    finally:
        os.umask(old)
    assert code == 0 and not stale.exists()
    assert (tmp_path / "out.safetensors").stat().st_mode & 0o777 == 0o640
