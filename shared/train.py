"""Training, framework-free: the epoch loop with progress, evaluation, checkpoints and resuming.

Each framework's ``*_impl/train.py`` holds the step in its own idiom (``shared.contract.Trainer``);
``shared.parity.training`` compares what the steps do, ``shared.parity.lockstep`` runs them side by side.
"""

from __future__ import annotations

import dataclasses
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


def _save(out: str, impl: Implementation, trainer: Trainer, model, optimizer, state: dict) -> None:
    """Write every checkpoint file to a staging folder, then move each into place, state.json last."""
    staging = os.path.join(out, ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    trainer.save_training_state(staging, model, optimizer)
    save_file(impl.export_weights(model), os.path.join(staging, CANONICAL_FILE))
    with open(os.path.join(staging, STATE_FILE), "w") as fh:
        json.dump(state, fh, indent=2)
    honour_umask(Path(staging))  # safetensors and some frameworks' writers create 0600 files
    for filename in (*trainer.TRAINING_STATE_FILES, CANONICAL_FILE, STATE_FILE):
        os.replace(os.path.join(staging, filename), os.path.join(out, filename))
    os.rmdir(staging)


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


def fit(
    name: str, recipe: Recipe, *, data_dir: str | None = None, out: str, resume: bool = False, seed: int = 0,
    limit: int | None = None, stop_after: int | None = None, stream: TextIO | None = None,
    engine: DataParallel | None = None,
) -> dict:
    """Train ``recipe`` in one framework, evaluating and checkpointing every epoch; returns the run's state.

    The progress bar goes to ``stream`` (default: stderr at call time). ``engine`` (``fit_data_parallel``
    passes it): train data-parallel; every process of the run executes this loop on the same global
    batches, each replica its shard, and only the writer prints and writes.
    """
    stream = stream or sys.stderr
    name = frameworks.canonical_name(name)
    ds = load_data(recipe, data_dir, limit)
    spec = data_spec(recipe, ds)
    steps_per_epoch = len(ds.x_train) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ResNetParityError(f"batch size {recipe.batch_size} exceeds the {len(ds.x_train)} training images")
    impl, trainer = parts(name, engine)
    writer = engine is None or engine.is_writer
    run = {"framework": name, "seed": seed, "limit": limit, "devices": 1 if engine is None else engine.replicas,
           "sync_bn": engine is not None and engine.sync_bn}
    model = impl.build_model(spec, seed=seed)
    optimizer = trainer.make_optimizer(model, recipe, recipe.epochs * steps_per_epoch)
    if resume:
        state = _read_state(out, run, recipe)
        trainer.load_training_state(out, model, optimizer)
    else:
        if writer:
            os.makedirs(out, exist_ok=True)
        state = {**run, "arch": spec.name, "dataset": ds.name, "recipe": recipe.to_dict(), "epoch": 0, "history": []}
    last = recipe.epochs if stop_after is None else min(recipe.epochs, state["epoch"] + stop_after)
    label = f"{frameworks.LABELS[name]} {spec.name} on {ds.name}" + ("" if engine is None else
                                                                     f", {engine.replicas} replicas")
    for epoch in range(state["epoch"] + 1, last + 1):
        desc = f"{label} epoch {epoch}/{recipe.epochs}"
        # a live bar on a terminal only; every epoch ends with one line either way
        bar = tqdm(total=steps_per_epoch * recipe.batch_size, desc=desc, unit="img", file=stream, leave=False,
                   disable=not (writer and stream.isatty()))
        start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        batches = iterate_batches(ds.x_train, ds.y_train, recipe.batch_size, seed=epoch_seed(seed, epoch), drop_last=True)
        for done, (x, y) in enumerate(batches, start=1):
            loss, logits = trainer.train_step(model, optimizer, x, y, recipe)
            if not math.isfinite(loss):
                raise ResNetParityError(f"the loss became {loss} at epoch {epoch}, step {done}: lower the learning rate (lr=)")
            seen += len(y)
            loss_sum += loss * len(y)
            correct += int(np.sum(logits.argmax(axis=1) == y))
            bar.set_postfix_str(f"loss {loss_sum / seen:.4f} acc {100 * correct / seen:5.1f}%", refresh=False)
            bar.update(len(y))
        bar.close()
        train_s = time.perf_counter() - start
        # every process evaluates (its own copy; the writer's is reported): none waits long in a collective
        test_loss, test_acc = evaluate(trainer, model, ds, recipe.batch_size)
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "test_loss": test_loss, "test_accuracy": test_acc, "seconds": time.perf_counter() - start}
        state["history"].append(record)
        state["epoch"] = epoch
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


def fit_data_parallel(
    name: str, recipe: Recipe, *, devices: int, sync_bn: bool = False, device: str = "cpu",
    launch: parallel.Launch | None = None, **kwargs,
) -> dict | None:
    """``fit`` on ``devices`` replicas with the framework's own engine (``shared.parallel.run``); ``kwargs`` as
    for ``fit``. Returns the run's state (None in a launched process that does not write). A device count
    this host cannot give or a batch that does not split is refused before anything starts."""
    name = frameworks.canonical_name(name)
    parallel.check_replicas(name, devices, recipe.batch_size, device, launch)
    return parallel.run(name, _fit_replica, name, recipe, kwargs, devices=devices, sync_bn=sync_bn, device=device,
                        launch=launch)


def _fit_replica(engine: DataParallel, name: str, recipe: Recipe, kwargs: dict) -> dict:
    return fit(name, recipe, engine=engine, **kwargs)
