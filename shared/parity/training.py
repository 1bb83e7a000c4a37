"""Training parity: the same steps in every framework from the same canonical weights and batches,
checking train-mode logits, gradients, parameters and BatchNorm statistics with the rule of
``shared.parity.rule``: each tensor against the reference framework's float64 run, within k times the
reference's own error in the dtype under test.

BatchNorm running variance: PyTorch stores the unbiased batch variance, Keras and Flax the
biased one (``shared.recipe``). The models keep their framework's convention; the comparison
re-expresses each framework's running-variance history in the reference's convention
(``convert_running_var``, exact), so a mismatch in momentum or in the factor n/(n-1) still shows.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator, Mapping, Sequence

import numpy as np

from .. import frameworks, parallel
from . import floor, steps as step_parity
from ..contract import DataParallel
from ..errors import ParityInputError
from ..recipe import SGD, Convention, Recipe, bn_sample_counts, convert_running_var, softmax_cross_entropy
from ..spec import ResNetSpec
from ..train import parts, run_steps
from ..weights import BN_STAT_SUFFIXES, count_parameters
from .inputs import batch_problem, participants, starting_weights
from .report import FrameworkResult, ParityReport
from .floor import FLOOR_SAMPLES, sample
from .rule import TensorCheck, check_tensors, float64_note, rule_for


# The parity checks' default: every term of the SGD update at once. The learning rate keeps five
# steps on random labels smooth (larger ones amplify float32 rounding chaotically); the weight
# decay is large enough that applying it decoupled, as Keras's weight_decay does, shows (12 * lr * wd).
PARITY_RECIPE = Recipe(
    "parity", "resnet20", "random", SGD(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-2),
    label_smoothing=0.1, epochs=1, batch_size=8,
)


@dataclass
class Trace:
    """What one framework did over a few steps: the facts ``compare_traces`` checks."""

    framework: str
    convention: Convention
    losses: list[float] = field(default_factory=list)
    logits: np.ndarray | None = None  # train-mode logits of the first step
    gradients: dict[str, np.ndarray] = field(default_factory=dict)  # at the initial weights, first batch
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # after each recorded step
    running_mean: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    running_var: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per BN: initial, then every step
    settings: dict[str, str] = field(default_factory=dict)  # what the framework's numerics() set for the run


def trace_training(
    name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe, *, dtype: str = "float32", record_steps: tuple[int, ...] = (1, 5), model=None, optimizer=None,
    device: str = "cpu", engine: DataParallel | PerShard | None = None,
) -> Trace:
    """Run ``batches`` in one framework and keep the facts a parity check compares (see ``run_steps``;
    ``engine``: on N replicas, or the one-device per-shard reference)."""
    impl, trainer = parts(name, engine)
    trace = Trace(name, trainer.BN_RUNNING_VAR)
    with impl.numerics(dtype, device) as trace.settings:
        if model is None and engine is None:  # built straight from the weights: no random initialisation to throw away
            model = frameworks.load_checkpoints(name).model_from_weights(spec, weights, dtype)
        else:  # a data-parallel engine builds its own (wrapped, replicated) model
            model = impl.build_model(spec, dtype=dtype) if model is None else model
            impl.import_weights(model, weights)
        x0, y0 = batches[0]
        trace.gradients = trainer.gradients(model, x0, y0, recipe)  # moves BN statistics; run_steps reloads
        trace.running_var = {k: [np.asarray(v)] for k, v in weights.items() if k.endswith(".running_var")}
        steps = run_steps(name, spec, weights, batches, recipe, dtype=dtype, model=model, optimizer=optimizer, engine=engine)
        for step, (loss, logits, after) in enumerate(steps, start=1):
            trace.losses.append(loss)
            if step == 1:
                trace.logits = logits
            for key in trace.running_var:
                trace.running_var[key].append(after[key])
            if step in record_steps:
                trace.params[step] = {k: v for k, v in after.items() if not k.endswith(BN_STAT_SUFFIXES)}
                trace.running_mean[step] = {k: v for k, v in after.items() if k.endswith(".running_mean")}
    return trace


class PerShard:
    """One device with per-replica BatchNorm: the reference of a data-parallel step without ``sync_bn``.

    Each of ``replicas`` contiguous shards of a global batch runs forward and backward on its own, every one
    from the same BN statistics; the step applies the mean of the shards' gradients (equal shards: the
    gradient of the global batch's mean loss) and keeps shard 0's BN statistics (the rule for per-replica
    BN). Built from ``Trainer.gradients`` and ``apply_gradients`` only, so it shares no code with an engine.
    Stands in for a ``DataParallel`` in ``trace_training``.
    """

    def __init__(self, name: str, replicas: int):
        self.impl, self.trainer, self.replicas = frameworks.load(name), frameworks.load_trainer(name), replicas
        self.BN_RUNNING_VAR = self.trainer.BN_RUNNING_VAR

    def numerics(self, dtype: str, device: str = "cpu"):
        return self.impl.numerics(dtype, device)

    def build_model(self, spec: ResNetSpec, *, seed: int = 0, dtype: str = "float32"):
        return self.impl.build_model(spec, seed=seed, dtype=dtype)

    def import_weights(self, model, weights: Mapping[str, np.ndarray]) -> None:
        self.impl.import_weights(model, weights)

    def export_weights(self, model) -> dict[str, np.ndarray]:
        return self.impl.export_weights(model)

    def make_optimizer(self, model, recipe: Recipe, total_steps: int):
        return self.trainer.make_optimizer(model, recipe, total_steps)

    def gradients(self, model, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
        """The mean of the shards' loss gradients; the BN statistics become shard 0's."""
        start = self.impl.export_weights(model)
        grads, stats = [], {}
        for r in range(self.replicas):
            self.impl.import_weights(model, start)  # a train-mode forward moves the BN statistics
            grads.append(self.trainer.gradients(model, parallel.shard(x, r, self.replicas),
                                                parallel.shard(y, r, self.replicas), recipe))
            if r == 0:
                stats = {k: v for k, v in self.impl.export_weights(model).items() if k.endswith(BN_STAT_SUFFIXES)}
        self.impl.import_weights(model, {**start, **stats})
        return {k: sum(g[k] for g in grads) / self.replicas for k in grads[0]}

    def train_step(self, model, optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[float, np.ndarray]:
        start = self.impl.export_weights(model)
        logits = []
        for r in range(self.replicas):
            self.impl.import_weights(model, start)
            logits.append(self.impl.features(model, parallel.shard(x, r, self.replicas), training=True)["fc"])
        self.impl.import_weights(model, start)
        self.trainer.apply_gradients(model, optimizer, self.gradients(model, x, y, recipe), recipe)
        return softmax_cross_entropy(np.concatenate(logits), y, recipe.label_smoothing), np.concatenate(logits)


def trace_data_parallel(
    name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe, *, devices: int, sync_bn: bool, dtype: str = "float32", record_steps: tuple[int, ...] = (1, 5),
    device: str = "cpu",
) -> Trace:
    """``trace_training`` on ``devices`` replicas of the framework's own engine, in fresh processes."""
    return parallel.run(name, _trace_replica, name, spec, weights, batches, recipe, dtype, record_steps, device,
                        devices=devices, sync_bn=sync_bn, device=device)


def _trace_replica(engine: DataParallel, name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list,
                   recipe: Recipe, dtype: str, record_steps: tuple[int, ...], device: str) -> Trace:
    return trace_training(name, spec, weights, batches, recipe, dtype=dtype, record_steps=record_steps, device=device,
                          engine=engine)


def trace_tensors(trace: Trace, convention: Convention, spec: ResNetSpec, batch: int, size: int) -> dict[str, np.ndarray]:
    """A trace's facts as named tensors in checking order: the first step's logits, every gradient, then per
    recorded step the parameters and BN statistics; running variances re-expressed in ``convention``."""
    counts = bn_sample_counts(spec, batch, size)
    var = {key: convert_running_var(history, counts[key[: -len(".running_var")]], spec.bn_momentum, trace.convention, convention)
           for key, history in trace.running_var.items()}
    out = {"logits@1": trace.logits}
    out.update({f"gradient {k}": v for k, v in trace.gradients.items()})
    for step in sorted(trace.params):
        out.update({f"params@{step} {k}": v for k, v in trace.params[step].items()})
        out.update({f"running_mean@{step} {k}": v for k, v in trace.running_mean[step].items()})
        out.update({f"running_var@{step} {k}": history[step] for k, history in var.items()})
    return out


def check_traces(trace: Trace, source: Trace, truth: Trace | None, rule: dict, spec: ResNetSpec, batch: int, size: int,
                 sampled: Mapping[str, float] | None = None) -> list[TensorCheck]:
    """Every training fact of ``trace`` against the reference's trace and its float64 run (in the reference's
    BN-variance convention, so a wrong momentum or a missing n/(n-1) still shows); ``sampled``: per fact the
    largest error of the floor samples (``floor_runs``), which the floor takes in."""
    def flat(t: Trace) -> dict[str, np.ndarray]:
        return trace_tensors(t, source.convention, spec, batch, size)

    ref = flat(source)
    return check_tensors(list(ref), flat(trace), ref, None if truth is None else flat(truth), rule, sampled)


def random_batches(spec: ResNetSpec, steps: int, batch: int, size: int, seed: int, dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of standard-normal NHWC images with uniform random labels."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((batch, size, size, spec.in_channels)).astype(dtype), rng.integers(0, spec.num_classes, batch))
        for _ in range(steps)
    ]


# One low-precision run is one draw of the dtype's rounding, and two kinds of training fact make one draw a
# poor measure of it. A fact that sums many nearly cancelling terms (a BN bias's gradient over batch x H x W
# values) has an error that varies by orders of magnitude between draws. And a gradient is discontinuous at a
# ReLU kink: a pre-activation within rounding of zero is clipped by one run and not by another, and that
# element's gradient then differs outright. So the floor takes in FLOOR_SAMPLES more runs of the reference
# (``shared.parity.floor``), each on the batches with the examples in another order (the same function summed in
# another order: every fact but the logits is a sum over the batch, or over each shard's examples with
# per-replica BN; the logits are put back in order) and with every weight and input value rounded otherwise:
# parameters moved so move every activation of every layer as another framework's rounding does, so a kink
# within rounding flips in some samples as it does in some frameworks (resnet20 with synchronised BN on two
# devices: a flip at params@3 was 173 times the floor of input-only samples, 0.9 times this one's).


def less_start_move(trace: Trace, moved: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                    momentum: float) -> Trace:
    """A floor sample's trace as if it had started from ``weights``, not ``moved``: its stored facts less the start's
    move (parameters by it, the BN statistics after step s by ``(1 - momentum) ** s`` times it). Otherwise the move
    itself, which no target makes, would raise the floor of every stored fact."""
    keep = 1.0 - momentum
    shift = {k: np.asarray(moved[k], np.float64) - np.asarray(weights[k], np.float64) for k in weights}
    for params in trace.params.values():
        params.update({k: v - shift[k] for k, v in params.items()})
    for step, means in trace.running_mean.items():
        means.update({k: v - keep**step * shift[k] for k, v in means.items()})
    for k, history in trace.running_var.items():
        trace.running_var[k] = [v - keep**step * shift[k] for step, v in enumerate(history)]
    return trace


def floor_runs(source: str, spec: ResNetSpec, weights: dict[str, np.ndarray],
               batches: list[tuple[np.ndarray, np.ndarray]], recipe: Recipe, *, dtype: str,
               record_steps: tuple[int, ...], device: str, seed: int | Sequence[int], engine: PerShard | None = None,
               count: int = FLOOR_SAMPLES) -> Iterator[Trace]:
    """``count`` runs of ``source`` on ``batches`` with each batch's examples permuted (within each shard of a
    per-replica-BN ``engine``, so every shard normalises the same examples), the weights and the inputs rounded
    otherwise (``shared.parity.floor.sample``); logits restored to order, stored facts less the start's move. One at
    a time: a ResNet-50 trace holds 300 MB."""
    rng = np.random.default_rng(seed)
    shards = 1 if engine is None else engine.replicas
    size = len(batches[0][0]) // shards
    for _ in range(count):
        order = np.concatenate([shard * size + rng.permutation(size) for shard in range(shards)])
        moved, moved_x = sample(weights, [x[order] for x, _ in batches], dtype, rng)
        run = trace_training(source, spec, moved, [(mx, y[order]) for mx, (_, y) in zip(moved_x, batches)], recipe,
                             dtype=dtype, record_steps=record_steps, device=device, engine=engine)
        run.logits = run.logits[np.argsort(order)]
        yield less_start_move(run, moved, weights, spec.bn_momentum)


def float64_diagnosis(results: Sequence[FrameworkResult], spec: ResNetSpec, weights64: dict[str, np.ndarray],
                      batches64: list[tuple[np.ndarray, np.ndarray]], recipe: Recipe, truth: Trace, *,
                      record_steps: tuple[int, ...], device: str, batch: int, size: int) -> list[str]:
    """A note per framework that failed a low-precision check: do the tensors it failed match the truth in float64?

    Over several steps a pre-activation within rounding of a ReLU kink, clipped in one framework only, can put
    an honest port beyond the floor; a port mistake shows in float64 too, and rounding does not. The verdict
    stays as it is (a mistake in one dtype only, such as a statistic kept in bfloat16, passes in float64).
    """
    rule = rule_for("float64", "train", None)
    notes = []
    for result in results:
        failed = {c.name for c in result.checks if c.binding and not c.passed and not c.name.startswith(step_parity.PREFIX)}
        if result.reference or not failed:
            continue
        trace = trace_training(result.framework, spec, weights64, batches64, recipe, dtype="float64",
                               record_steps=record_steps, device=device)
        worst = max((c for c in check_traces(trace, truth, None, rule, spec, batch, size) if c.name in failed),
                    key=lambda c: c.error)
        notes.append(float64_note(frameworks.LABELS[result.framework], len(failed), worst,
                                  "rounding amplified by training (a pre-activation within rounding of a ReLU kink, "
                                  "clipped in one framework only)",
                                  ", or a trajectory that amplifies even float64's rounding this far"))
    return notes


def train_parity(
    arch: str | ResNetSpec | None = None, steps: int = 5, *, weights: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    weights_format: str | None = None, recipe: Recipe | None = None, source: str = "torch", targets: list[str] | None = None, dtype: str = "float32",
    batch: int = 8, size: int | None = None, seed: int = 0, tolerance: float | None = None, k: float | None = None,
    device: str = "cpu",
    devices: int = 1, sync_bn: bool = False,
) -> ParityReport | None:
    """Train ``steps`` steps in every framework from the same weights and batches; check each against the source.

    The facts: the first step's train-mode logits, the initial gradients, and the parameters and BN
    running statistics after step 1 and after step ``steps``, each tensor on its own. ``size`` defaults
    to the preset's, at most 64: at batch 8 every BN then averages >= 32 values per channel (fewer make
    the step chaotic: at 32x32 ResNet-18's last stage is 1x1). ``weights``, ``tolerance``, ``k`` and ``device``
    as for ``shared.parity.compare``. A framework that fails a low-precision check is rerun in float64
    (``float64_diagnosis``), and a note says whether the tensors it failed then match the truth.

    ``devices`` > 1: every framework trains data-parallel on its own engine, global batch ``batch``, and is
    checked against the source on one device: with ``sync_bn`` on the whole batch, else with each shard
    normalised on its own (``PerShard``). Under a multi-process launch (``shared.parallel.run``) only process 0
    returns the report; the other processes return None.
    """
    source, names = participants(source, targets)
    spec, initial, weights_record, notes = starting_weights(arch, weights, weights_format, dtype, seed)
    if spec.headless:
        raise ParityInputError(f"{spec.name} is a headless backbone (num_classes=0): no logits for a loss to train; "
                               "compare it in eval mode")
    size = min(spec.image_size, 64) if size is None else size
    if steps < 1 or batch < 2 or size < 1:
        raise ParityInputError(f"steps={steps}, size={size}, batch={batch}: steps and size must be >= 1 and batch >= 2 "
                               "(BatchNorm needs two values per channel)")
    if problem := batch_problem(spec, batch, size):
        raise ParityInputError(problem)
    if devices > 1:
        for name in names:
            parallel.check_replicas(name, devices, batch, device)
    recipe = (recipe or PARITY_RECIPE).replace(arch=spec.name)
    batches = random_batches(spec, steps, batch, size, seed + 1, "float64" if dtype == "float64" else "float32")
    record_steps = tuple(sorted({1, steps}))
    rule = rule_for(dtype, "train", tolerance, k)
    params, stats = count_parameters(spec)
    # one device: the frameworks against the source's run; data parallel: all against the source on one device
    reference = None if devices == 1 or sync_bn else PerShard(source, devices)
    traces, timings = {}, {}
    for name in names:
        start = time.perf_counter()
        if devices == 1:
            traces[name] = trace_training(name, spec, initial, batches, recipe, dtype=dtype, record_steps=record_steps,
                                          device=device)
        else:
            traces[name] = trace_data_parallel(name, spec, initial, batches, recipe, devices=devices, sync_bn=sync_bn,
                                               dtype=dtype, record_steps=record_steps, device=device)
            if traces[name] is None:  # a process of a multi-process launch that does not write: process 0 reports
                return None
        timings[name] = {"train_s": time.perf_counter() - start}
    source_trace = traces[source]
    if devices > 1:
        source_trace = trace_training(source, spec, initial, batches, recipe, dtype=dtype, record_steps=record_steps,
                                      device=device, engine=reference)
    truth, sampled = None, None
    if rule["kind"] == "floor":
        start = time.perf_counter()
        wide = [(x.astype(np.float64), y) for x, y in batches]
        initial64 = {k: np.asarray(v, np.float64) for k, v in initial.items()}
        truth = trace_training(source, spec, initial64, wide, recipe, dtype="float64", record_steps=record_steps,
                               device=device, engine=reference)
        timings[source]["truth_s"] = time.perf_counter() - start
    # per-replica BN: the running variance is each shard's, over the shard's values
    bn_batch = batch if reference is None else batch // devices
    targets = [n for n in names if n != source or devices > 1]
    alone = {}
    if truth is not None:
        start = time.perf_counter()
        true = trace_tensors(truth, source_trace.convention, spec, bn_batch, size)
        sampled = floor.judged(
            lambda more, count: floor.largest_errors(
                (trace_tensors(run, source_trace.convention, spec, bn_batch, size) for run in floor_runs(
                    source, spec, initial, batches, recipe, dtype=dtype, record_steps=record_steps, device=device,
                    seed=[seed, more], engine=reference, count=count)), true),
            lambda found: {n: check_traces(traces[n], source_trace, truth, rule, spec, bn_batch, size, found)
                           for n in targets}, notes)
        del true
        timings[source]["floor_samples_s"] = time.perf_counter() - start
        if devices == 1 and steps > 1:
            start = time.perf_counter()
            alone = step_parity.check_steps_alone(source, names, spec, initial64, batches, recipe, rule, dtype=dtype,
                                                  device=device, seed=seed, notes=notes)
            timings[source]["steps_alone_s"] = time.perf_counter() - start
    results = []
    for name in names:
        checks = check_traces(traces[name], source_trace, truth, rule, spec, bn_batch, size, sampled)
        if alone:  # every step checked on its own: the cumulative facts after step 1 show the trajectory only
            checks = [replace(c, binding=not step_parity.after_step_one(c.name)) for c in checks] + alone[name]
        counted = count_parameters(spec, {**traces[name].params[record_steps[0]], **traces[name].running_mean[record_steps[0]],
                                          **{k: v[0] for k, v in traces[name].running_var.items()}})
        results.append(FrameworkResult(name, name == source and devices == 1, *counted, counted == (params, stats),
                                       checks, traces[name].settings["device"], timings=timings[name]))
    notes = notes + step_parity.trajectory_notes(results)
    if truth is not None and devices == 1 and not all(r.passed for r in results):
        notes = notes + float64_diagnosis(results, spec, initial64, wide, recipe, truth, record_steps=record_steps,
                                          device=device, batch=bn_batch, size=size)
    extra = {"steps": steps, "batch": batch, "size": size, "checkpoints": list(record_steps), "recipe": recipe.to_dict(),
             "bn_variance": {n: traces[n].convention for n in names}, "losses": {n: traces[n].losses for n in names},
             "devices": devices, "sync_bn": sync_bn, "steps_alone": bool(alone)}
    if devices > 1:
        extra["losses"]["one device"] = source_trace.losses
    if truth is not None:
        extra["losses"]["float64 truth"] = truth.losses
    return ParityReport(
        "train", spec.name, asdict(spec), source, dtype, rule, {"origin": "random", "seed": seed + 1,
        "shape": [batch, size, size, spec.in_channels]}, weights_record, {n: traces[n].settings for n in names},
        frameworks.versions(names), params, stats, results, notes, extra,
    )
