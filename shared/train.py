"""Training, framework-free: the epoch loop with progress, evaluation, checkpoints and resuming.

Each framework's ``*_impl/train.py`` holds the step in its own idiom (``shared.contract.Trainer``);
``shared.parity.training`` compares what the steps do, ``shared.parity.lockstep`` runs them side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
from safetensors.numpy import save_file
from tqdm import tqdm

from . import frameworks, parallel
from .checkpoint import honour_umask
from .contract import DataParallel, Implementation, Trainer
from .datasets import Dataset, iterate_batches, load_dataset
from .errors import ResNetParityError
from .recipe import Recipe, softmax_cross_entropy
from .spec import ResNetSpec, get_spec

STATE_FILE = "state.json"
CANONICAL_FILE = "model.safetensors"


def parts(name: str, engine: DataParallel | None = None) -> tuple[Implementation, Trainer]:
    """(model and weights, training step) of a framework: its package and trainer, or both from ``engine``."""
    if engine is not None:
        return engine, engine
    return frameworks.load(name), frameworks.load_trainer(name)


def run_steps(
    name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe, *, dtype: str = "float32", model=None, optimizer=None, engine: DataParallel | None = None,
) -> Iterator[tuple[float, np.ndarray, dict[str, np.ndarray]]]:
    """Load ``weights``, then yield (loss, train-mode logits, canonical weights after) for each batch.

    ``model`` and ``optimizer`` replace the framework's own build and the recipe's mapping (the
    tests pass deliberately wrong ones); the schedule spans ``len(batches)`` steps. ``engine``: run
    the steps data-parallel on it instead of on one device.
    """
    impl, trainer = parts(name, engine)
    model = model if model is not None else impl.build_model(spec, dtype=dtype)
    impl.import_weights(model, weights)
    optimizer = optimizer if optimizer is not None else trainer.make_optimizer(model, recipe, len(batches))
    for x, y in batches:
        loss, logits = trainer.train_step(model, optimizer, x, y, recipe)
        yield loss, logits, impl.export_weights(model)


def load_data(recipe: Recipe, data_dir: str | None, limit: int | None) -> Dataset:
    """The recipe's dataset at its image size, cut to ``limit`` training and test images."""
    ds = load_dataset(recipe.dataset, data_dir, size=recipe.image_size)
    if limit is not None:
        if limit < 1:
            raise ResNetParityError(f"limit={limit}: must be >= 1")
        ds = dataclasses.replace(ds, x_train=ds.x_train[:limit], y_train=ds.y_train[:limit],
                                 x_test=ds.x_test[:limit], y_test=ds.y_test[:limit])
    return ds


def data_spec(recipe: Recipe, ds: Dataset) -> ResNetSpec:
    """The recipe's architecture with the dataset's channels and classes."""
    return get_spec(recipe.arch, in_channels=ds.image_shape[2], num_classes=ds.num_classes)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: the only randomness in training, so (seed, epoch) is the RNG state."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def evaluate(trainer: Trainer, model, ds: Dataset, batch_size: int) -> tuple[float, float]:
    """(loss, accuracy) on the test split, in eval mode."""
    logits = trainer.predict(model, ds.x_test, batch_size)
    return softmax_cross_entropy(logits, ds.y_test), float(np.mean(logits.argmax(axis=1) == ds.y_test))


# A checkpoint is a set of files (the framework's own, the canonical weights, state.json) that must change together.
# They are written into STAGING; the finished folder is renamed READY, which marks the set whole; then each file moves
# into place, state.json last, and READY goes. A process killed while moving leaves READY behind, and the next run
# on the folder finishes the moves (``_finish_save``) before it reads anything: no file is torn, no set is mixed.
STAGING, READY = ".staging", ".ready"


def _save(out: str, impl: Implementation, trainer: Trainer, model, optimizer, state: dict) -> None:
    """Write every checkpoint file to a staging folder, then move the whole set into place."""
    staging = os.path.join(out, STAGING)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    trainer.save_training_state(staging, model, optimizer)
    save_file(impl.export_weights(model), os.path.join(staging, CANONICAL_FILE))
    with open(os.path.join(staging, STATE_FILE), "w") as fh:
        json.dump(state, fh, indent=2)
    honour_umask(Path(staging))  # safetensors and some frameworks' writers create 0600 files
    os.rename(staging, os.path.join(out, READY))
    _finish_save(out)


def _finish_save(out: str) -> None:
    """Move a whole checkpoint set from READY into ``out``, state.json last (also what a killed writer left)."""
    ready = os.path.join(out, READY)
    if not os.path.isdir(ready):
        return
    names = sorted(os.listdir(ready), key=lambda n: n == STATE_FILE)
    for filename in names:
        with contextlib.suppress(FileNotFoundError):  # another process of the run finishing the same move
            os.replace(os.path.join(ready, filename), os.path.join(out, filename))
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(ready)


def checkpoint_files(trainer: Trainer) -> tuple[str, ...]:
    """What a run writes into its folder, state.json last."""
    return (*trainer.TRAINING_STATE_FILES, CANONICAL_FILE, STATE_FILE)


def _read_state(out: str, given: dict, recipe: Recipe) -> dict:
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        raise ResNetParityError(f"resume=True: no checkpoint in {out} ({STATE_FILE} is missing); train without resume=True first")
    with open(path) as fh:
        state = json.load(fh)
    saved = {k: state.get(k, {"devices": 1, "sync_bn": False}.get(k)) for k in given}  # runs saved before devices existed
    saved_recipe, given_recipe = state.get("recipe", {}), recipe.to_dict()
    diffs = [f"{k}: saved {saved[k]!r}, given {given[k]!r}" for k in given if saved[k] != given[k]]
    diffs += [f"{k}: saved {saved_recipe.get(k)!r}, given {v!r}" for k, v in given_recipe.items() if saved_recipe.get(k) != v]
    if diffs:
        raise ResNetParityError(f"resume=True: {out} holds a different run; " + "; ".join(diffs))
    return state


def open_run(out: str, name: str, run: dict, recipe: Recipe, *, resume: bool, force: bool) -> None:
    """Refuse, before anything starts, a run folder this run may not write into: without ``resume``, one that holds
    another run or any other file (``force``: start over, replacing this tool's files there); with ``resume``, one
    that does not hold this run. A checkpoint a killed writer left half-moved is completed first."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ResNetParityError(f"out={out}: not a directory")
    if resume:
        if force:
            raise ResNetParityError("resume=True continues the run in out, force=True replaces it: pass one of them")
        _finish_save(out)
        _read_state(out, run, recipe)
        return
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if not present:
        return
    if not force:
        if STATE_FILE in present or READY in present:
            raise ResNetParityError(f"out={out} holds a training run; pass resume=True to continue it or force=True "
                                    "to start over")
        raise ResNetParityError(f"out={out} holds files this run did not write ({', '.join(present[:3])}"
                                f"{', ...' if len(present) > 3 else ''}); choose another folder or pass force=True "
                                "to replace them")
    for filename in (STATE_FILE, *checkpoint_files(frameworks.load_trainer(name))):  # state.json first: no run remains
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out, filename))
    for folder in (READY, STAGING):
        shutil.rmtree(os.path.join(out, folder), ignore_errors=True)


def fit(
    name: str, recipe: Recipe, *, data_dir: str | None = None, out: str, resume: bool = False, force: bool = False,
    seed: int = 0, limit: int | None = None, stop_after: int | None = None, save_every: int | None = None,
    stream: TextIO | None = None, engine: DataParallel | None = None,
) -> dict:
    """Train ``recipe`` in one framework, evaluating and checkpointing every epoch (and every ``save_every`` steps);
    returns the run's state. ``out`` must be new or empty unless ``resume`` (continue the run saved there, from the
    step it was saved at) or ``force`` (start over): see ``open_run``.

    The progress bar goes to ``stream`` (default: stderr at call time). ``engine`` (``fit_data_parallel``
    passes it, having checked ``out``): train data-parallel; every process of the run executes this loop on
    the same global batches, each replica its shard, and only the writer prints and writes.
    """
    stream = stream or sys.stderr
    name = frameworks.canonical_name(name)
    _check_save_every(save_every)
    ds = load_data(recipe, data_dir, limit)
    spec = data_spec(recipe, ds)
    steps_per_epoch = len(ds.x_train) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ResNetParityError(f"batch size {recipe.batch_size} exceeds the {len(ds.x_train)} training images")
    run = _run_record(name, seed, limit, 1 if engine is None else engine.replicas, engine is not None and engine.sync_bn)
    if engine is None:
        open_run(out, name, run, recipe, resume=resume, force=force)
    impl, trainer = parts(name, engine)
    writer = engine is None or engine.is_writer
    model = impl.build_model(spec, seed=seed)
    optimizer = trainer.make_optimizer(model, recipe, recipe.epochs * steps_per_epoch)
    if resume:
        state = _read_state(out, run, recipe)
        trainer.load_training_state(out, model, optimizer)
    else:
        if writer:
            os.makedirs(out, exist_ok=True)
        state = {**run, "arch": spec.name, "dataset": ds.name, "recipe": recipe.to_dict(), "epoch": 0, "step": 0,
                 "history": []}
    last = recipe.epochs if stop_after is None else min(recipe.epochs, state["epoch"] + stop_after)
    label = f"{frameworks.LABELS[name]} {spec.name} on {ds.name}" + ("" if engine is None else
                                                                     f", {engine.replicas} replicas")
    for epoch in range(state["epoch"] + 1, last + 1):
        desc = f"{label} epoch {epoch}/{recipe.epochs}"
        # an epoch saved part-way resumes at its next batch, with its running totals: the batch order is a
        # function of (seed, epoch), so the steps left are the ones an uninterrupted run takes
        skip = state.get("step", 0)
        totals = state.pop("partial", {"seen": 0, "loss_sum": 0.0, "correct": 0, "seconds": 0.0})
        # a live bar on a terminal only; every epoch ends with one line either way
        bar = tqdm(total=steps_per_epoch * recipe.batch_size, initial=totals["seen"], desc=desc, unit="img",
                   file=stream, leave=False, disable=not (writer and stream.isatty()))
        start = time.perf_counter() - totals["seconds"]
        seen, loss_sum, correct = totals["seen"], totals["loss_sum"], totals["correct"]
        batches = iterate_batches(ds.x_train, ds.y_train, recipe.batch_size, seed=epoch_seed(seed, epoch), drop_last=True)
        for done, (x, y) in enumerate(itertools.islice(batches, skip, None), start=skip + 1):
            loss, logits = trainer.train_step(model, optimizer, x, y, recipe)
            if not math.isfinite(loss):
                raise ResNetParityError(f"the loss became {loss} at epoch {epoch}, step {done}: lower the learning rate (lr=)")
            seen += len(y)
            loss_sum += loss * len(y)
            correct += int(np.sum(logits.argmax(axis=1) == y))
            bar.set_postfix_str(f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:5.1f}%", refresh=False)
            bar.update(len(y))
            if save_every and ((epoch - 1) * steps_per_epoch + done) % save_every == 0 and done < steps_per_epoch:
                state.update(step=done, partial={"seen": seen, "loss_sum": loss_sum, "correct": correct,
                                                 "seconds": time.perf_counter() - start})
                if writer:
                    _save(out, impl, trainer, model, optimizer, state)
                del state["partial"]
        bar.close()
        train_s = time.perf_counter() - start
        # every process evaluates (its own copy; the writer's is reported): none waits long in a collective
        test_loss, test_acc = evaluate(trainer, model, ds, recipe.batch_size)
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "test_loss": test_loss, "test_accuracy": test_acc, "seconds": time.perf_counter() - start}
        state["history"].append(record)
        state.update(epoch=epoch, step=0)
        if writer:
            # seen counts whole global batches: the throughput of all replicas together
            stream.write(f"{desc}: loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:5.1f}% "
                         f"{seen / train_s:,.0f} img/s | test loss {test_loss:.4f} acc {100 * test_acc:5.1f}% | "
                         f"{record['seconds']:.1f} s\n")
            stream.flush()
            _save(out, impl, trainer, model, optimizer, state)
        if engine is not None:
            engine.barrier()  # no process runs ahead of the checkpoint
    return state


def _check_save_every(save_every: int | None) -> None:
    if save_every is not None and save_every < 1:
        raise ResNetParityError(f"save_every={save_every}: must be >= 1")


def _run_record(name: str, seed: int, limit: int | None, devices: int, sync_bn: bool) -> dict:
    """What identifies a run: a resume must give the same (with the same recipe)."""
    return {"framework": name, "seed": seed, "limit": limit, "devices": devices, "sync_bn": sync_bn}


def fit_data_parallel(
    name: str, recipe: Recipe, *, devices: int, sync_bn: bool = False, device: str = "cpu",
    timeout: float = parallel.TIMEOUT_S, **kwargs,
) -> dict | None:
    """``fit`` on ``devices`` replicas with the framework's own engine (``shared.parallel.run``); ``kwargs`` as
    for ``fit``. Returns the run's state (None in a launched process that does not write). A device count
    this host cannot give, a batch that does not split, a bad launch environment and an ``out`` the run may not
    write into are refused before anything starts. ``timeout``: seconds a process waits for the others; a process
    that died or hangs ends the run with ``ReplicaLost`` in the others."""
    name = frameworks.canonical_name(name)
    parallel.check_replicas(name, devices, recipe.batch_size, device)
    _check_save_every(kwargs.get("save_every"))
    run = _run_record(name, kwargs.get("seed", 0), kwargs.get("limit"), devices, sync_bn)
    open_run(kwargs["out"], name, run, recipe, resume=kwargs.get("resume", False), force=kwargs.get("force", False))
    return parallel.run(name, _fit_replica, name, recipe, kwargs, devices=devices, sync_bn=sync_bn, device=device,
                        timeout=timeout)


def _fit_replica(engine: DataParallel, name: str, recipe: Recipe, kwargs: dict) -> dict:
    return fit(name, recipe, engine=engine, **kwargs)
