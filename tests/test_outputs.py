"""No command replaces a file the user did not ask to replace: every output path (compare --junit, train --plot,
convert DST) refuses one of the command's inputs (even with --force) and an existing file this tool did not write for
the same purpose (unless --force); each refusal is one line and exit 2, the victim byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from shared import checkpoint
from shared.cli import main
from shared.cli import train as train_command
from shared.cli.report import is_our_junit
from shared.spec import get_spec
from shared.weights import randomize

ARCH = "resnet20"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(capsys, victim: Path, *argv, match: str) -> None:
    """Exit 2, one line naming the problem, and ``victim`` byte-identical."""
    before = digest(victim)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == "" and err.count("\n") == 1 and match in err, err
    assert digest(victim) == before


@pytest.fixture
def victim(tmp_path, impls) -> Path:
    """A user's checkpoint, as the issue's 46.8 MB one was (smaller)."""
    path = tmp_path / "victim.pth"
    checkpoint.save(path, randomize(get_spec(ARCH), seed=3), ARCH)
    return path


# ----------------------------------------------------------------------------- compare --junit


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_junit_never_replaces_the_checkpoint_compared(capsys, victim, force):
    refused(capsys, victim, "compare", "--weights", victim, "--junit", victim, *force,
            match=f"--junit {victim}: is --weights ({victim}), an input of this command")


def test_junit_never_replaces_the_input_batch_or_a_link_to_the_checkpoint(capsys, tmp_path, victim):
    np.save(tmp_path / "x.npy", np.zeros((1, 32, 32, 3), np.float32))
    refused(capsys, tmp_path / "x.npy", "compare", "--arch", ARCH, "--input", tmp_path / "x.npy",
            "--junit", tmp_path / "x.npy", "--force", match="is --input")
    os.link(victim, tmp_path / "hard.xml")  # another name of the same file
    refused(capsys, victim, "compare", "--weights", victim, "--junit", tmp_path / "hard.xml", "--force",
            match="is --weights")
    (tmp_path / "soft.xml").symlink_to(victim)
    refused(capsys, victim, "compare", "--weights", victim, "--junit", tmp_path / "soft.xml", "--force",
            match="is --weights")


def test_junit_never_replaces_a_file_inside_a_checkpoint_directory(capsys, tmp_path, impls):
    folder = tmp_path / "r20_orbax"
    checkpoint.save(folder, randomize(get_spec(ARCH), seed=3), ARCH)
    inside = next(p for p in folder.rglob("*") if p.is_file())
    refused(capsys, inside, "compare", "--weights", folder, "--junit", inside, "--force", match="lies inside --weights")


def test_junit_replaces_only_its_own_reports_without_force(capsys, tmp_path, victim):
    notes = tmp_path / "notes.xml"
    notes.write_text("<notes>mine</notes>\n")
    refused(capsys, notes, "compare", "--arch", ARCH, "--frameworks", "torch", "--junit", notes,
            match="already exists and is not a JUnit report of compare (pass --force to overwrite)")
    assert main(["compare", "--arch", ARCH, "--frameworks", "torch", "--junit", str(notes), "--force"]) == 0
    assert is_our_junit(notes)
    ours = digest(notes)
    assert main(["compare", "--arch", ARCH, "--frameworks", "torch", "tf", "--junit", str(notes)]) == 0  # ours: replaced
    assert is_our_junit(notes) and digest(notes) != ours
    capsys.readouterr()


def test_junit_in_a_directory_or_a_missing_one(capsys, tmp_path):
    for path, match in ((tmp_path, "is a directory"), (tmp_path / "no" / "r.xml", "does not exist")):
        code = main(["compare", "--arch", ARCH, "--junit", str(path)])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and match in err


# ----------------------------------------------------------------------------- train --all-frameworks --plot


def lockstep_report(recipe, names, steps, **_) -> dict:
    """What train_all_frameworks returns, for two steps, without training (the plot is what is under test)."""
    return {"arch": recipe.arch, "dataset": recipe.dataset, "steps": 2, "reference": "torch",
            "losses": {n: [2.3, 2.2] for n in names}, "parameter_drift": {n: [0.0, 1e-7] for n in names},
            "drift_over_limit": {n: [0.0, 0.5] for n in names if n != "torch"},
            "rule": {"description": "a stub"}}


def test_plot_never_replaces_another_file_and_replaces_its_own(capsys, tmp_path, victim, monkeypatch):
    monkeypatch.setattr(train_command, "train_all_frameworks", lockstep_report)
    refused(capsys, victim, "train", "--all-frameworks", "--plot", victim,
            match="already exists and is not a loss plot of this command")
    png = tmp_path / "curves.png"
    assert main(["train", "--all-frameworks", "--plot", str(png)]) == 0
    assert train_command.is_our_plot(png) and not train_command.is_our_plot(victim)
    first = digest(png)
    png.write_bytes(png.read_bytes()[:-12] + b"\0" * 12)  # ours still (its metadata), though changed since
    assert main(["train", "--all-frameworks", "--plot", str(png)]) == 0 and digest(png) == first
    capsys.readouterr()


def test_plot_never_replaces_the_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(train_command, "train_all_frameworks", lockstep_report)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b images")
    refused(capsys, data / "train-images-idx3-ubyte.gz", "train", "--all-frameworks", "--data-dir", data,
            "--plot", data / "train-images-idx3-ubyte.gz", match="lies inside --data-dir")


# ----------------------------------------------------------------------------- convert DST


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_convert_never_writes_over_its_source(capsys, tmp_path, victim, force):
    refused(capsys, victim, "convert", victim, victim, *force, match="is SRC")
    os.link(victim, tmp_path / "same.pth")
    refused(capsys, victim, "convert", victim, tmp_path / "same.pth", "--force", match="is SRC")


def test_convert_never_replaces_a_directory_that_holds_its_source(capsys, tmp_path, impls):
    folder = tmp_path / "run"
    folder.mkdir()
    source = folder / "model.safetensors"
    checkpoint.save(source, randomize(get_spec(ARCH), seed=3), ARCH)
    refused(capsys, source, "convert", source, folder, "--to", "orbax", "--force", match="holds SRC")


def test_convert_refuses_an_existing_destination_without_force(capsys, tmp_path, victim):
    other = tmp_path / "other.weights.h5"
    other.write_bytes(b"someone else's")
    refused(capsys, other, "convert", victim, other, match="already exists (pass --force to overwrite)")
