"""Training parity: the same steps in every framework from the same canonical weights and batches,
checking train-mode logits, gradients, parameters and BatchNorm statistics with the rule of
``shared.parity``: each tensor against the reference framework's float64 run, within k times the
reference's own error in the dtype under test.

BatchNorm running variance: PyTorch stores the unbiased batch variance, Keras and Flax the
biased one (``shared.recipe``). The models keep their framework's convention; the comparison
re-expresses each framework's running-variance history in the reference's convention
(``convert_running_var``, exact), so a mismatch in momentum or in the factor n/(n-1) still shows.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from . import frameworks
from .errors import ParityInputError
from .parity import (
    FrameworkResult, ParityReport, TensorCheck, check_tensors, participants, rule_for, starting_weights, versions,
)
from .recipe import SGD, Convention, Recipe, bn_sample_counts, convert_running_var
from .spec import ResNetSpec
from .train import run_steps
from .weights import BN_STAT_SUFFIXES, count_parameters


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
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # after the checkpoint steps
    running_mean: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    running_var: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per BN: initial, then every step
    settings: dict[str, str] = field(default_factory=dict)  # what the framework's numerics() set for the run


def trace_training(
    name: str, spec: ResNetSpec, weights: dict[str, np.ndarray], batches: list[tuple[np.ndarray, np.ndarray]],
    recipe: Recipe, *, dtype: str = "float32", checkpoints: tuple[int, ...] = (1, 5), model=None, optimizer=None,
    device: str = "cpu",
) -> Trace:
    """Run ``batches`` in one framework and keep the facts a parity check compares (see ``run_steps``)."""
    impl, trainer = frameworks.load(name), frameworks.load_trainer(name)
    trace = Trace(name, trainer.BN_RUNNING_VAR)
    with impl.numerics(dtype, device) as trace.settings:
        if model is None:  # built straight from the weights: no random initialisation to throw away
            model = frameworks.load_checkpoints(name).model_from_weights(spec, weights, dtype)
        else:
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


def trace_tensors(trace: Trace, convention: Convention, spec: ResNetSpec, batch: int, size: int) -> dict[str, np.ndarray]:
    """A trace's facts as named tensors in checking order: the first step's logits, every gradient, then per
    checkpoint step the parameters and BN statistics; running variances re-expressed in ``convention``."""
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


def fact_of(name: str) -> str:
    """'params@5 layer1.0.conv1.weight' -> 'params@5': the group a training tensor belongs to."""
    return name.split(" ")[0] if " " in name else name


def check_traces(trace: Trace, source: Trace, truth: Trace | None, rule: dict, spec: ResNetSpec, batch: int, size: int
                 ) -> list[TensorCheck]:
    """Every training fact of ``trace`` against the reference's trace and its float64 run (in the reference's
    BN-variance convention, so a wrong momentum or a missing n/(n-1) still shows)."""
    def flat(t: Trace) -> dict[str, np.ndarray]:
        return trace_tensors(t, source.convention, spec, batch, size)

    ref = flat(source)
    return check_tensors(list(ref), flat(trace), ref, None if truth is None else flat(truth), rule)



def random_batches(spec: ResNetSpec, steps: int, batch: int, size: int, seed: int, dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of standard-normal NHWC images with uniform random labels."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((batch, size, size, spec.in_channels)).astype(dtype), rng.integers(0, spec.num_classes, batch))
        for _ in range(steps)
    ]


def train_parity(
    arch: str | ResNetSpec | None = None, steps: int = 5, *, weights: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    weights_format: str | None = None, recipe: Recipe | None = None, source: str = "torch", targets: list[str] | None = None, dtype: str = "float32",
    batch: int = 8, size: int | None = None, seed: int = 0, tolerance: float | None = None, device: str = "cpu",
) -> ParityReport:
    """Train ``steps`` steps in every framework from the same weights and batches; check each against the source.

    The facts: the first step's train-mode logits, the initial gradients, and the parameters and BN
    running statistics after step 1 and after step ``steps``, each tensor on its own. ``size`` defaults
    to the preset's, at most 64: at batch 8 every BN then averages >= 32 values per channel (fewer make
    the step chaotic: at 32x32 ResNet-18's last stage is 1x1). ``weights``, ``tolerance`` and ``device``
    as for ``shared.parity.compare``.
    """
    source, names = participants(source, targets)
    spec, initial, weights_record, notes = starting_weights(arch, weights, weights_format, dtype, seed)
    size = min(spec.image_size, 64) if size is None else size
    if steps < 1 or batch < 2 or size < 1:
        raise ParityInputError(f"steps={steps}, size={size}, batch={batch}: steps and size must be >= 1 and batch >= 2 "
                               "(BatchNorm needs two values per channel)")
    recipe = (recipe or PARITY_RECIPE).replace(arch=spec.name)
    batches = random_batches(spec, steps, batch, size, seed + 1, "float64" if dtype == "float64" else "float32")
    checkpoints = tuple(sorted({1, steps}))
    rule = rule_for(dtype, "train", tolerance)
    params, stats = count_parameters(spec)
    traces, timings = {}, {}
    for name in names:
        start = time.perf_counter()
        traces[name] = trace_training(name, spec, initial, batches, recipe, dtype=dtype, checkpoints=checkpoints, device=device)
        timings[name] = {"train_s": time.perf_counter() - start}
    truth = None
    if rule["kind"] == "floor":
        start = time.perf_counter()
        wide = [(x.astype(np.float64), y) for x, y in batches]
        initial64 = {k: np.asarray(v, np.float64) for k, v in initial.items()}
        truth = trace_training(source, spec, initial64, wide, recipe, dtype="float64", checkpoints=checkpoints, device=device)
        timings[source]["truth_s"] = time.perf_counter() - start
    results = []
    for name in names:
        checks = check_traces(traces[name], traces[source], truth, rule, spec, batch, size)
        counted = count_parameters(spec, {**traces[name].params[checkpoints[0]], **traces[name].running_mean[checkpoints[0]],
                                          **{k: v[0] for k, v in traces[name].running_var.items()}})
        results.append(FrameworkResult(name, name == source, *counted, counted == (params, stats), checks,
                                       traces[name].settings["device"], timings=timings[name]))
    extra = {"steps": steps, "batch": batch, "size": size, "checkpoints": list(checkpoints), "recipe": recipe.to_dict(),
             "bn_variance": {n: traces[n].convention for n in names}, "losses": {n: traces[n].losses for n in names}}
    if truth is not None:
        extra["losses"]["float64 truth"] = truth.losses
    return ParityReport(
        "train", spec.name, asdict(spec), source, dtype, rule, {"origin": "random", "seed": seed + 1,
        "shape": [batch, size, size, spec.in_channels]}, weights_record, {n: traces[n].settings for n in names},
        versions(names), params, stats, results, notes, extra,
    )
