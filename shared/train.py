"""``resnet-parity train``: train in one framework, or in all three in lockstep; and training parity checks.

Each framework's ``*_impl/train.py`` holds the step in its own idiom; this module holds what is
framework-free: the epoch loop, the progress bar, evaluation, checkpoints and resuming, and
``train_parity``, which runs the same steps in every framework from the same canonical weights
and batches and compares train-mode logits, gradients, parameters and BatchNorm statistics.

BatchNorm running variance: PyTorch stores the unbiased batch variance, Keras and Flax the
biased one (``shared.recipe``). The models keep their framework's convention; the comparison
re-expresses each framework's running-variance history in the reference's convention
(``convert_running_var``, exact), so a mismatch in momentum or in the factor n/(n-1) still shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TextIO

import numpy as np
from safetensors.numpy import save_file

from . import frameworks
from .cli import EXIT_OK, CliError
from .datasets import Dataset, iterate_batches, list_datasets, load_dataset
from .recipe import (
    RECIPES, SGD, Convention, Recipe, bn_sample_counts, convert_running_var, get_recipe,
    softmax_cross_entropy,
)
from .spec import ResNetSpec, get_spec, list_specs
from .weights import BN_STAT_SUFFIXES, randomize, relative_error

# Bounds on max|a-b| / max|b| between frameworks for one training step's facts (README, "Tolerances").
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
STATE_FILE = "state.json"
CANONICAL_FILE = "model.safetensors"

# The parity checks' default: every term of the SGD update at once. The learning rate keeps five
# steps on random labels smooth (larger ones amplify float32 rounding chaotically); the weight
# decay is large enough that applying it decoupled, as Keras's weight_decay does, shows (12 * lr * wd).
PARITY_RECIPE = Recipe(
    "parity", "resnet20", "random", SGD(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-2),
    label_smoothing=0.1, epochs=1, batch_size=8,
)


def train_module(name: str) -> ModuleType:
    """The ``train`` module of a framework's implementation package, imported quietly."""
    impl = frameworks.load(name)
    with frameworks.quiet_native_stderr():
        return importlib.import_module(f"{impl.__name__}.train")


# --------------------------------------------------------------------------- lockstep steps


def run_steps(
    name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe, *, dtype: str = "float32", model=None, optimizer=None,
) -> Iterator[tuple[float, np.ndarray, dict[str, np.ndarray]]]:
    """Load ``weights``, then yield (loss, train-mode logits, canonical weights after) for each batch.

    ``model`` and ``optimizer`` replace the framework's own build and the recipe's mapping (the
    tests pass deliberately wrong ones); the schedule spans ``len(batches)`` steps.
    """
    impl, trainer = frameworks.load(name), train_module(name)
    model = model if model is not None else impl.build_model(spec, dtype=dtype)
    impl.import_weights(model, weights)
    optimizer = optimizer if optimizer is not None else trainer.make_optimizer(model, recipe, len(batches))
    for x, y in batches:
        loss, logits = trainer.train_step(model, optimizer, x, y, recipe)
        yield loss, logits, impl.export_weights(model)


@dataclass
class Trace:
    """What one framework did over a few steps: the facts ``compare_traces`` checks."""

    framework: str
    convention: Convention
    losses: list[float] = field(default_factory=list)
    logits: np.ndarray | None = None  # train-mode logits of the first step
    gradients: dict[str, np.ndarray] = field(default_factory=dict)  # at the initial weights, first batch
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # after the checkpoint steps
    running_mean: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    running_var: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per BN: initial, then every step


def trace_training(
    name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe, *, dtype: str = "float32", checkpoints: tuple[int, ...] = (1, 5), model=None, optimizer=None,
) -> Trace:
    """Run ``batches`` in one framework and keep the facts a parity check compares (see ``run_steps``)."""
    impl, trainer = frameworks.load(name), train_module(name)
    trace = Trace(name, trainer.BN_RUNNING_VAR)
    model = model if model is not None else impl.build_model(spec, dtype=dtype)
    impl.import_weights(model, weights)
    x0, y0 = batches[0]
    trace.gradients = trainer.gradients(model, x0, y0, recipe)  # moves BN statistics; run_steps reloads
    trace.running_var = {k: [np.asarray(v)] for k, v in weights.items() if k.endswith(".running_var")}
    steps = run_steps(name, spec, weights, batches, recipe, dtype=dtype, model=model, optimizer=optimizer)
    for step, (loss, logits, after) in enumerate(steps, start=1):
        trace.losses.append(loss)
        if step == 1:
            trace.logits = logits
        for key in trace.running_var:
            trace.running_var[key].append(after[key])
        if step in checkpoints:
            trace.params[step] = {k: v for k, v in after.items() if not k.endswith(BN_STAT_SUFFIXES)}
            trace.running_mean[step] = {k: v for k, v in after.items() if k.endswith(".running_mean")}
    return trace


def _worst(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    """The largest per-tensor relative error and its key."""
    errors = {k: relative_error(a[k], b[k]) for k in b}
    key = max(errors, key=errors.get)
    return errors[key], key


def compare_traces(a: Trace, b: Trace, spec: ResNetSpec, batch: int, size: int, *, convert_bn_variance: bool = True) -> dict:
    """Relative errors of ``a`` against the reference ``b``: logits, gradients, parameters, BN statistics.

    ``a``'s running variance is first re-expressed in ``b``'s convention (unless told not to).
    """
    counts = bn_sample_counts(spec, batch, size)
    target = b.convention if convert_bn_variance else a.convention
    var_a = {
        key: convert_running_var(history, counts[key[: -len(".running_var")]], spec.bn_momentum, a.convention, target)
        for key, history in a.running_var.items()
    }
    row: dict = {"framework": a.framework, "reference": b.framework, "worst": {}}
    row["logits"] = relative_error(a.logits, b.logits)
    row["gradients"], row["worst"]["gradients"] = _worst(a.gradients, b.gradients)
    for fact in ("params", "running_mean", "running_var"):
        row[fact] = {}
        row["worst"][fact] = {}
    for step in sorted(b.params):
        row["params"][step], row["worst"]["params"][step] = _worst(a.params[step], b.params[step])
        if b.running_mean[step]:
            row["running_mean"][step], row["worst"]["running_mean"][step] = _worst(a.running_mean[step], b.running_mean[step])
            now_a = {k: h[step] for k, h in var_a.items()}
            now_b = {k: h[step] for k, h in b.running_var.items()}
            row["running_var"][step], row["worst"]["running_var"][step] = _worst(now_a, now_b)
    return row


def _checked(row: dict, tol: float) -> dict:
    values = [row["logits"], row["gradients"]] + [e for fact in ("params", "running_mean", "running_var") for e in row[fact].values()]
    row["passed"] = all(v <= tol for v in values)
    return row


def random_batches(spec: ResNetSpec, steps: int, batch: int, size: int, seed: int, dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of standard-normal NHWC images with uniform random labels."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((batch, size, size, spec.in_channels)).astype(dtype), rng.integers(0, spec.num_classes, batch))
        for _ in range(steps)
    ]


def train_parity(
    arch: str, steps: int = 5, *, recipe: Recipe | None = None, targets: list[str] | None = None,
    dtype: str = "float32", batch: int = 8, size: int | None = None, seed: int = 0,
) -> dict:
    """Train ``steps`` steps in every framework from the same randomised weights and batches; compare all pairs.

    Returns a JSON-able report: per framework its losses; per ordered pair (framework, reference) the
    relative errors of the first step's train-mode logits, the initial gradients, and the parameters,
    BN running means and BN running variances (converted to the reference's convention) after step 1
    and after step ``steps``; each pair passes when every error is within ``TOLERANCE[dtype]``.
    ``size`` defaults to the preset's, at most 64: at batch 8 every BN then averages >= 32 values per
    channel (fewer make the step chaotic: at 32x32 ResNet-18's last stage is 1x1).
    """
    spec = get_spec(arch)
    size = size or min(spec.image_size, 64)
    if steps < 1 or batch < 2 or size < 1:
        raise ValueError("steps and size must be >= 1 and batch >= 2 (BatchNorm needs two values per channel)")
    recipe = (recipe or PARITY_RECIPE).replace(arch=spec.name)
    names = [frameworks.canonical_name(n) for n in (targets or frameworks.installed())]
    weights = randomize(spec, seed, np.dtype(dtype))
    batches = random_batches(spec, steps, batch, size, seed + 1, dtype)
    checkpoints = tuple(sorted({1, steps}))
    traces = {n: trace_training(n, spec, weights, batches, recipe, dtype=dtype, checkpoints=checkpoints) for n in names}
    tol = TOLERANCE[dtype]
    pairs = [_checked(compare_traces(traces[a], traces[b], spec, batch, size), tol) for a in names for b in names if a != b]
    return {
        "arch": spec.name, "dtype": dtype, "batch": batch, "size": size, "steps": steps, "seed": seed,
        "recipe": recipe.to_dict(), "tolerance": tol, "checkpoints": list(checkpoints),
        "bn_variance": {n: traces[n].convention for n in names},
        "losses": {n: traces[n].losses for n in names},
        "pairs": [_jsonable(p) for p in pairs], "passed": all(p["passed"] for p in pairs),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj


def format_parity(report: dict) -> str:
    """The train-parity report as a table: one row per ordered pair of frameworks."""
    steps = [str(s) for s in report["checkpoints"]]
    facts = [("params", "params"), ("running_mean", "BN mean"), ("running_var", "BN var")]
    head = f"{'framework':<10} {'reference':<10} {'logits':>8} {'grads':>8} " + " ".join(
        f"{label + ' @' + s:>11}" for _, label in facts for s in steps) + "  result"
    lines = [
        f"training parity: {report['arch']}, {report['dtype']}, batch {report['batch']} at {report['size']}x{report['size']}, "
        f"{report['steps']} steps of {report['recipe']['optimizer']['kind']}, tolerance {report['tolerance']:.0e} (max|a-b|/max|b|)",
        "BN running variance compared in the reference's convention: "
        + ", ".join(f"{frameworks.LABELS[n]} {c}" for n, c in report["bn_variance"].items()),
        head, "-" * len(head),
    ]
    for p in report["pairs"]:
        cells = " ".join(f"{p[fact].get(s, float('nan')):>11.1e}" for fact, _ in facts for s in steps)
        lines.append(
            f"{frameworks.LABELS[p['framework']]:<10} {frameworks.LABELS[p['reference']]:<10} {p['logits']:>8.1e} "
            f"{p['gradients']:>8.1e} {cells}  {'PASS' if p['passed'] else 'FAIL'}"
        )
    lines.append("all frameworks train alike" if report["passed"] else "MISMATCH: at least one pair differs")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the train command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framework", help="torch, tf or jax (not with --all-frameworks)")
    parser.add_argument("--recipe", default="digits", choices=list(RECIPES), help="named preset (default: digits, embedded)")
    parser.add_argument("--arch", choices=list_specs(), metavar="NAME", help="preset architecture (default: the recipe's)")
    parser.add_argument("--dataset", choices=list_datasets(), help="default: the recipe's")
    parser.add_argument("--data-dir", help="folder holding the dataset's distribution files")
    parser.add_argument("--image-size", type=int, help="resize images to this side (default: the recipe's)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="base learning rate")
    parser.add_argument("--schedule", choices=("constant", "step", "cosine"))
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--weight-decay", type=float, help="L2 added to the gradient, as torch's SGD")
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    parser.add_argument("--limit", type=int, help="use only the first N training and N test images")
    parser.add_argument("--out", help="checkpoint folder (default: runs/<framework>-<arch>-<dataset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--stop-after", type=int, metavar="EPOCHS", help="train at most this many epochs now; --resume continues")
    parser.add_argument("--all-frameworks", action="store_true", help="train all installed frameworks in lockstep")
    parser.add_argument("--steps", type=int, default=20, help="steps for --all-frameworks")
    parser.add_argument("--plot", help="PNG of the loss curves for --all-frameworks (default: <out>/loss_curves.png)")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The named preset with every option given on the command line applied."""
    names = ("arch", "dataset", "image_size", "epochs", "batch_size", "lr", "schedule", "warmup_steps",
             "weight_decay", "label_smoothing")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    return get_recipe(args.recipe, **overrides)


def load_data(recipe: Recipe, data_dir: str | None, limit: int | None) -> Dataset:
    """The recipe's dataset at its image size, cut to ``limit`` training and test images."""
    ds = load_dataset(recipe.dataset, data_dir, size=recipe.image_size)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        ds = dataclasses.replace(ds, x_train=ds.x_train[:limit], y_train=ds.y_train[:limit],
                                 x_test=ds.x_test[:limit], y_test=ds.y_test[:limit])
    return ds


def data_spec(recipe: Recipe, ds: Dataset) -> ResNetSpec:
    """The recipe's architecture with the dataset's channels and classes."""
    return get_spec(recipe.arch, in_channels=ds.image_shape[2], num_classes=ds.num_classes)


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: the only randomness in training, so (seed, epoch) is the RNG state."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class Progress:
    """A hand-written progress bar on a stream: rewritten in place on a terminal, one line per epoch otherwise."""

    def __init__(self, stream: TextIO, prefix: str, total: int, width: int = 24):
        self.stream, self.prefix, self.total, self.width = stream, prefix, total, width
        self.live = stream.isatty()

    def line(self, done: int, loss: float, acc: float, rate: float) -> str:
        filled = self.width * done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.prefix} [{bar}] {done}/{self.total} loss {loss:.4f} acc {100 * acc:5.1f}% {rate:,.0f} img/s"

    def update(self, done: int, loss: float, acc: float, rate: float) -> None:
        if self.live:
            self.stream.write("\r" + self.line(done, loss, acc, rate))
            self.stream.flush()

    def finish(self, done: int, loss: float, acc: float, rate: float, tail: str) -> None:
        self.stream.write(("\r" if self.live else "") + self.line(done, loss, acc, rate) + tail + "\n")
        self.stream.flush()


def evaluate(trainer: ModuleType, model, ds: Dataset, batch_size: int) -> tuple[float, float]:
    """(loss, accuracy) on the test split, in eval mode."""
    logits = trainer.predict(model, ds.x_test, batch_size)
    return softmax_cross_entropy(logits, ds.y_test), float(np.mean(logits.argmax(axis=1) == ds.y_test))


def _save(out: str, name: str, model, optimizer, state: dict) -> None:
    """Write every checkpoint file to a staging folder, then move each into place, state.json last."""
    impl, trainer = frameworks.load(name), train_module(name)
    staging = os.path.join(out, ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    trainer.save_checkpoint(staging, model, optimizer)
    save_file(impl.export_weights(model), os.path.join(staging, CANONICAL_FILE))
    with open(os.path.join(staging, STATE_FILE), "w") as fh:
        json.dump(state, fh, indent=2)
    for filename in (*trainer.CHECKPOINT_FILES, CANONICAL_FILE, STATE_FILE):
        os.replace(os.path.join(staging, filename), os.path.join(out, filename))
    os.rmdir(staging)


def _read_state(out: str, name: str, recipe: Recipe, seed: int, limit: int | None) -> dict:
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        raise CliError(f"--resume: no checkpoint in {out} ({STATE_FILE} is missing); run without --resume first")
    with open(path) as fh:
        state = json.load(fh)
    saved = {"framework": state.get("framework"), "seed": state.get("seed"), "limit": state.get("limit")}
    given = {"framework": name, "seed": seed, "limit": limit}
    saved_recipe, given_recipe = state.get("recipe", {}), recipe.to_dict()
    diffs = [f"{k}: saved {saved[k]!r}, given {given[k]!r}" for k in given if saved[k] != given[k]]
    diffs += [f"{k}: saved {saved_recipe.get(k)!r}, given {v!r}" for k, v in given_recipe.items() if saved_recipe.get(k) != v]
    if diffs:
        raise CliError(f"--resume: {out} holds a different run; " + "; ".join(diffs))
    return state


def fit(
    name: str, recipe: Recipe, *, data_dir: str | None = None, out: str, resume: bool = False, seed: int = 0,
    limit: int | None = None, stop_after: int | None = None, stream: TextIO | None = None,
) -> dict:
    """Train ``recipe`` in one framework, evaluating and checkpointing every epoch; returns the run's state.

    The progress bar goes to ``stream`` (default: stderr at call time).
    """
    stream = stream or sys.stderr
    name = frameworks.canonical_name(name)
    ds = load_data(recipe, data_dir, limit)
    spec = data_spec(recipe, ds)
    steps_per_epoch = len(ds.x_train) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {recipe.batch_size} exceeds the {len(ds.x_train)} training images")
    impl, trainer = frameworks.load(name), train_module(name)
    model = impl.build_model(spec, seed=seed)
    optimizer = trainer.make_optimizer(model, recipe, recipe.epochs * steps_per_epoch)
    if resume:
        state = _read_state(out, name, recipe, seed, limit)
        trainer.load_checkpoint(out, model, optimizer)
    else:
        os.makedirs(out, exist_ok=True)
        state = {"framework": name, "arch": spec.name, "dataset": ds.name, "seed": seed, "limit": limit,
                 "recipe": recipe.to_dict(), "epoch": 0, "history": []}
    last = recipe.epochs if stop_after is None else min(recipe.epochs, state["epoch"] + stop_after)
    label = f"{frameworks.LABELS[name]} {spec.name} on {ds.name}"
    for epoch in range(state["epoch"] + 1, last + 1):
        progress = Progress(stream, f"{label} epoch {epoch}/{recipe.epochs}", steps_per_epoch)
        start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        batches = iterate_batches(ds.x_train, ds.y_train, recipe.batch_size, seed=epoch_seed(seed, epoch), drop_last=True)
        for done, (x, y) in enumerate(batches, start=1):
            loss, logits = trainer.train_step(model, optimizer, x, y, recipe)
            if not math.isfinite(loss):
                raise ValueError(f"the loss became {loss} at epoch {epoch}, step {done}: lower --lr")
            seen += len(y)
            loss_sum += loss * len(y)
            correct += int(np.sum(logits.argmax(axis=1) == y))
            progress.update(done, loss_sum / seen, correct / seen, seen / (time.perf_counter() - start))
        train_s = time.perf_counter() - start
        test_loss, test_acc = evaluate(trainer, model, ds, recipe.batch_size)
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "test_loss": test_loss, "test_accuracy": test_acc, "seconds": time.perf_counter() - start}
        progress.finish(steps_per_epoch, loss_sum / seen, correct / seen, seen / train_s,
                        f" | test loss {test_loss:.4f} acc {100 * test_acc:5.1f}% | {record['seconds']:.1f} s")
        state["history"].append(record)
        state["epoch"] = epoch
        _save(out, name, model, optimizer, state)
    return state


# --------------------------------------------------------------------------- --all-frameworks


def train_all_frameworks(
    recipe: Recipe, *, names: list[str], steps: int, seed: int = 0, data_dir: str | None = None, limit: int | None = None,
) -> dict:
    """The same ``steps`` steps in every framework, from the first framework's initial weights; losses and drift per step."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    ds = load_data(recipe, data_dir, limit)
    spec = data_spec(recipe, ds)
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    epoch = 0
    while len(batches) < steps:
        epoch += 1
        more = list(iterate_batches(ds.x_train, ds.y_train, recipe.batch_size, seed=epoch_seed(seed, epoch), drop_last=True))
        if not more:
            raise ValueError(f"batch size {recipe.batch_size} exceeds the {len(ds.x_train)} training images")
        batches += more[: steps - len(batches)]
    reference = names[0]
    weights = frameworks.load(reference).export_weights(frameworks.load(reference).build_model(spec, seed=seed))
    runs = {n: run_steps(n, spec, weights, batches, recipe) for n in names}
    losses: dict[str, list[float]] = {n: [] for n in names}
    drift: dict[str, list[float]] = {n: [] for n in names[1:]}
    for _ in range(steps):
        after = {n: next(run) for n, run in runs.items()}
        for n in names:
            losses[n].append(after[n][0])
        ref_params = {k: v for k, v in after[reference][2].items() if not k.endswith(BN_STAT_SUFFIXES)}
        for n in names[1:]:
            drift[n].append(_worst(after[n][2], ref_params)[0])
    return {"arch": spec.name, "dataset": ds.name, "recipe": recipe.to_dict(), "steps": steps, "seed": seed,
            "reference": reference, "losses": losses, "parameter_drift": drift}


def format_lockstep(report: dict) -> str:
    """One row per step: each framework's loss and each framework's parameter drift from the reference."""
    names = list(report["losses"])
    others = list(report["parameter_drift"])
    head = f"{'step':>5} " + " ".join(f"{'loss ' + n:>12}" for n in names) + " " + " ".join(f"{'drift ' + n:>12}" for n in others)
    lines = [
        f"{report['arch']} on {report['dataset']}, {report['steps']} steps from {frameworks.LABELS[report['reference']]}'s "
        f"initial weights; drift = max over tensors of max|p - p_ref| / max|p_ref| (parameters, not BN statistics)",
        head, "-" * len(head),
    ]
    for t in range(report["steps"]):
        lines.append(f"{t + 1:>5} " + " ".join(f"{report['losses'][n][t]:>12.6f}" for n in names) + " "
                     + " ".join(f"{report['parameter_drift'][n][t]:>12.2e}" for n in others))
    return "\n".join(lines)


def plot_losses(report: dict, path: str) -> None:
    """A PNG of each framework's loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (n, losses), style in zip(report["losses"].items(), ("-", "--", ":")):
        ax.plot(range(1, len(losses) + 1), losses, style, label=frameworks.LABELS[n])
    ax.set(xlabel="step", ylabel="training loss", title=f"{report['arch']} on {report['dataset']}: same weights, same batches")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.all_frameworks:
        if args.framework or args.resume:
            raise CliError("--all-frameworks trains every installed framework; drop --framework and --resume")
        out = args.out or os.path.join("runs", f"all-{recipe.arch}-{recipe.dataset}")
        report = train_all_frameworks(recipe, names=frameworks.installed(), steps=args.steps, seed=args.seed,
                                      data_dir=args.data_dir, limit=args.limit)
        print(format_lockstep(report))
        plot = args.plot or os.path.join(out, "loss_curves.png")
        plot_losses(report, plot)
        print(f"loss curves: {plot}")
        return EXIT_OK
    if not args.framework:
        raise CliError("choose --framework torch|tf|jax, or --all-frameworks")
    name = frameworks.canonical_name(args.framework)
    out = args.out or os.path.join("runs", f"{name}-{recipe.arch}-{recipe.dataset}")
    state = fit(name, recipe, data_dir=args.data_dir, out=out, resume=args.resume, seed=args.seed,
                limit=args.limit, stop_after=args.stop_after)
    if state["history"]:
        last = state["history"][-1]
        print(f"{frameworks.LABELS[name]} {state['arch']}: epoch {state['epoch']}/{recipe.epochs}, "
              f"test accuracy {100 * last['test_accuracy']:.1f}%, checkpoint in {out}")
    return EXIT_OK
