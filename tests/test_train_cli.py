"""``resnet-parity train``: checkpoints, resuming, reproducibility, recipes, errors, --all-frameworks."""

from __future__ import annotations

import gzip
import json
import os
import re
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

from shared import frameworks
from shared.cli import main
from shared.recipe import RECIPES, SGD, Adam, Schedule, get_recipe
from shared.spec import get_spec
from shared import train as shared_train
from shared.train import fit
from shared.weights import check_weights

NAMES = ["torch", "tf", "jax"]
# 96 digits at 16x16 in batches of 32: three steps an epoch, two epochs
SMALL = ["--arch", "resnet20", "--image-size", "16", "--limit", "96", "--batch-size", "32", "--epochs", "2"]
SMALL_SPEC = get_spec("resnet20", in_channels=1, num_classes=10)


def train(*args: str) -> int:
    return main(["train", *args])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_resume_reproduces(name, tmp_path, capsys, monkeypatch):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train("--framework", name, *SMALL, "--out", str(full)) == 0
    err = capsys.readouterr().err
    assert re.search(r"epoch 2/2: loss \d\.\d{4} acc +\d+\.\d% [\d,]+ img/s \| test loss \d\.\d{4} acc", err), err

    # stopped after epoch 1, resumed with a checkpoint every 2 steps and killed (here: an exception) at the fifth
    # step, resumed again from the checkpoint at step 4 (epoch 2, step 1): the uninterrupted run, bit for bit
    assert train("--framework", name, *SMALL, "--out", str(part), "--stop-after", "1") == 0
    assert json.loads((part / "state.json").read_text())["epoch"] == 1
    trainer = frameworks.load_trainer(name)
    step, calls = trainer.train_step, []

    def dies_at_step_5(*args):
        calls.append(1)
        if len(calls) == 2:  # steps 4 and 5 of this run
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(trainer, "train_step", dies_at_step_5)
    assert train("--framework", name, *SMALL, "--out", str(part), "--resume", "--save-every", "2") == 130
    monkeypatch.undo()
    saved = json.loads((part / "state.json").read_text())
    assert (saved["epoch"], saved["step"], len(saved["history"])) == (1, 1, 1)
    assert train("--framework", name, *SMALL, "--out", str(part), "--resume") == 0

    # interrupted and resumed == uninterrupted, bit for bit: optimizer state, schedule, data order and the epoch's
    # running totals restored
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    check_weights(SMALL_SPEC, a)
    mask = os.umask(0)
    os.umask(mask)
    assert {f.name: f.stat().st_mode & 0o777 for f in full.iterdir() if f.is_file()} == {
        f.name: 0o666 & ~mask for f in full.iterdir() if f.is_file()}  # as the umask says, whatever each writer does
    state = json.loads((full / "state.json").read_text())
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    assert state == {**json.loads((part / "state.json").read_text()), "history": state["history"]}
    for h_full, h_part in zip(state["history"], json.loads((part / "state.json").read_text())["history"]):
        assert h_full["test_accuracy"] == h_part["test_accuracy"] and h_full["train_loss"] == h_part["train_loss"]

    # the native checkpoint restores the same weights into a fresh model
    impl, trainer = frameworks.load(name), frameworks.load_trainer(name)
    model = impl.build_model(SMALL_SPEC, seed=1)
    recipe = get_recipe("digits", arch="resnet20", image_size=16, batch_size=32, epochs=2)
    trainer.load_training_state(str(full), model, trainer.make_optimizer(model, recipe, 6))
    native = impl.export_weights(model)
    for key in a:
        np.testing.assert_array_equal(native[key], a[key], err_msg=key)


def test_resume_refuses_a_different_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--framework", "torch", *SMALL, "--out", str(out), "--stop-after", "1") == 0
    capsys.readouterr()
    assert train("--framework", "torch", *SMALL, "--lr", "0.05", "--out", str(out), "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("resnet-parity train: error: --resume: ") and "holds a different run" in err and "optimizer" in err
    assert train("--framework", "tf", *SMALL, "--out", str(out), "--resume") == 2
    assert "framework: saved 'torch', given 'tf'" in capsys.readouterr().err
    assert train("--framework", "torch", *SMALL, "--out", str(tmp_path / "empty"), "--resume") == 2
    assert "state.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("devices", [[], ["--devices", "2"]], ids=["one-device", "data-parallel"])
def test_out_is_never_overwritten_without_resume_or_force(devices, tmp_path, capsys):
    out = tmp_path / "mydir"
    out.mkdir()
    victim = out / "model.pth"  # someone's resnet18, say
    victim.write_bytes(os.urandom(1000))
    before = victim.read_bytes()
    small = ["--framework", "torch", *SMALL, "--epochs", "1", *devices]
    assert train(*small, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"resnet-parity train: error: --out {out} holds files this run did not write (model.pth); choose "
                   "another folder or pass --force to replace them")
    assert victim.read_bytes() == before and os.listdir(out) == ["model.pth"]
    assert train(*small, "--out", str(out), "--resume") == 2
    assert "state.json is missing" in capsys.readouterr().err
    assert victim.read_bytes() == before
    if devices:
        return  # refused before any process starts; what follows is the same on one device

    # a finished run: running it again without --resume refuses and leaves every file as it was
    run = tmp_path / "run"
    assert train(*small, "--out", str(run)) == 0
    files = {f.name: f.read_bytes() for f in run.iterdir()}
    capsys.readouterr()
    assert train(*small, "--out", str(run)) == 2
    assert capsys.readouterr().err.strip() == (f"resnet-parity train: error: --out {run} holds a training run; pass "
                                                "--resume to continue it or --force to start over")
    assert {f.name: f.read_bytes() for f in run.iterdir()} == files
    assert train(*small, "--out", str(run), "--resume", "--force") == 2
    assert "pass one of them" in capsys.readouterr().err
    assert train(*small, "--out", str(victim)) == 2
    assert "not a directory" in capsys.readouterr().err and victim.read_bytes() == before

    # --force starts over: this tool's files are replaced, other files stay
    (out / "notes.txt").write_text("mine")
    assert train(*small, "--out", str(out), "--force") == 0
    assert (out / "notes.txt").read_text() == "mine" and victim.read_bytes() != before
    assert json.loads((out / "state.json").read_text())["epoch"] == 1


def test_a_checkpoint_cut_off_while_moving_is_completed(tmp_path, monkeypatch):
    """A writer killed between moving one checkpoint file and the next leaves the whole set in .ready; the next
    run on the folder finishes the moves before reading, so no file of the set comes from another save."""
    trainer = frameworks.load_trainer("torch")
    impl = frameworks.load("torch")
    recipe = get_recipe("digits", arch="resnet20", image_size=16, batch_size=32, epochs=2)
    model = impl.build_model(SMALL_SPEC, seed=0)
    optimizer = trainer.make_optimizer(model, recipe, 6)
    out = tmp_path / "run"
    out.mkdir()
    run = {"framework": "torch", "seed": 0, "limit": 96, "devices": 1, "sync_bn": False}
    first = {**run, "recipe": recipe.to_dict(), "epoch": 1, "step": 0, "history": []}
    shared_train._save(str(out), impl, trainer, model, optimizer, first)
    old = {f.name: f.read_bytes() for f in out.iterdir()}
    trainer.train_step(model, optimizer, np.zeros((32, 16, 16, 1), np.float32), np.zeros(32, int), recipe)
    replace, moved = os.replace, []

    def killed_after_one(src, dst):
        if moved:
            raise KeyboardInterrupt  # SIGKILL, as far as this folder can tell
        moved.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        shared_train._save(str(out), impl, trainer, model, optimizer, {**first, "step": 1})
    monkeypatch.undo()
    assert json.loads((out / "state.json").read_text())["step"] == 0  # the old state, beside one new file
    assert (out / ".ready").is_dir()
    shared_train.open_run(str(out), "torch", run, recipe, resume=True, force=False)
    assert not (out / ".ready").exists() and json.loads((out / "state.json").read_text())["step"] == 1
    new = {f.name: f.read_bytes() for f in out.iterdir()}
    assert new.keys() == old.keys() and all(new[k] != old[k] for k in new)  # every file from the second save


def test_usage_errors(tmp_path, capsys):
    assert train("--recipe", "d2l", "--framework", "torch", "--out", str(tmp_path)) == 2
    assert "fashion_mnist: data_dir is required" in capsys.readouterr().err
    assert train("--recipe", "d2l", "--framework", "torch", "--data-dir", str(tmp_path), "--out", str(tmp_path)) == 2
    assert "train-images-idx3-ubyte.gz is missing" in capsys.readouterr().err
    assert train(*SMALL, "--out", str(tmp_path)) == 2
    assert "choose --framework" in capsys.readouterr().err
    assert train("--framework", "torch", *SMALL, "--batch-size", "500", "--out", str(tmp_path)) == 2
    assert "exceeds the 96 training images" in capsys.readouterr().err


def test_recipes_are_the_seeds():
    """The numbers the seed tutorials use (d2l chapter 8.6; the TF seed's res_net)."""
    d2l, tf_seed = RECIPES["d2l"], RECIPES["tf_seed"]
    assert (d2l.arch, d2l.dataset, d2l.image_size, d2l.epochs, d2l.batch_size) == ("d2l_resnet18", "fashion_mnist", 96, 10, 256)
    assert d2l.optimizer == SGD(lr=0.05) and d2l.schedule == Schedule()
    assert (tf_seed.arch, tf_seed.dataset, tf_seed.batch_size) == ("seed_tf_cifar", "cifar10", 20)
    assert tf_seed.optimizer == Adam(lr=1e-3)
    assert RECIPES["digits"].dataset == "digits"
    assert get_recipe("tf_seed", lr=5e-4, warmup_steps=3).optimizer == Adam(lr=5e-4)
    assert get_recipe("tf_seed", lr=5e-4, warmup_steps=3).schedule.warmup_steps == 3


def _write_cifar_bin(folder, n_per_batch: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([rng.integers(0, 10, (n_per_batch, 1)), rng.integers(0, 256, (n_per_batch, 3072))], axis=1)
        (folder / name).write_bytes(records.astype(np.uint8).tobytes())


def _write_fashion_idx(folder, n: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 0x801, n) + labels.tobytes()))


def test_seed_recipes_run_on_their_datasets(tmp_path):
    _write_cifar_bin(tmp_path / "cifar-10-batches-bin", 8)
    out = tmp_path / "tf_seed"
    assert train("--framework", "torch", "--recipe", "tf_seed", "--data-dir", str(tmp_path), "--epochs", "1", "--out", str(out)) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["arch"] == "seed_tf_cifar" and state["dataset"] == "cifar10"
    assert state["recipe"]["optimizer"] == {"kind": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    check_weights(get_spec("seed_tf_cifar"), load_file(str(out / "model.safetensors")))

    _write_fashion_idx(tmp_path / "fashion", 8)
    out = tmp_path / "d2l"
    args = ["--recipe", "d2l", "--data-dir", str(tmp_path / "fashion"), "--epochs", "1", "--batch-size", "4", "--image-size", "32"]
    assert train("--framework", "torch", *args, "--out", str(out)) == 0
    check_weights(get_spec("d2l_resnet18"), load_file(str(out / "model.safetensors")))


def test_all_frameworks_lockstep(tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert train("--all-frameworks", *SMALL, "--steps", "3", "--plot", str(png)) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+ ", line)]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    losses = np.array([[float(v) for v in r[1:4]] for r in rows])
    drift = np.array([[float(v) for v in r[4:7]] for r in rows])
    over_limit = np.array([[float(v) for v in r[7:9]] for r in rows])
    # step 1's loss is a forward pass of identical weights on an identical batch
    np.testing.assert_allclose(losses[0], losses[0, 0], rtol=1e-5)
    # against the float64 truth each framework drifts about as far as the reference does: within the rule's limit
    assert np.all(np.isfinite(drift)) and np.all(drift > 0)
    assert np.all(over_limit <= 1.0), out


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_digits_recipe_reaches_90_percent(name, tmp_path):
    """The embedded default, as shipped: >= 90% held-out accuracy (benchmarks/train_accuracy.py times it)."""
    state = fit(name, get_recipe("digits"), out=str(tmp_path))
    assert state["epoch"] == RECIPES["digits"].epochs
    assert state["history"][-1]["test_accuracy"] >= 0.90
