"""Training parity: the same steps in every framework from the same canonical weights and batches,
comparing train-mode logits, gradients, parameters and BatchNorm statistics.

BatchNorm running variance: PyTorch stores the unbiased batch variance, Keras and Flax the
biased one (``shared.recipe``). The models keep their framework's convention; the comparison
re-expresses each framework's running-variance history in the reference's convention
(``convert_running_var``, exact), so a mismatch in momentum or in the factor n/(n-1) still shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import frameworks
from .errors import ParityInputError
from .recipe import SGD, Convention, Recipe, bn_sample_counts, convert_running_var
from .spec import ResNetSpec, get_spec
from .train import run_steps
from .weights import BN_STAT_SUFFIXES, randomize, relative_error, worst_error

# Bounds on max|a-b| / max|b| between frameworks for one training step's facts (README, "Tolerances").
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


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
) -> Trace:
    """Run ``batches`` in one framework and keep the facts a parity check compares (see ``run_steps``)."""
    impl, trainer = frameworks.load(name), frameworks.load_trainer(name)
    trace = Trace(name, trainer.BN_RUNNING_VAR)
    with impl.numerics(dtype) as trace.settings:
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
    row["gradients"], row["worst"]["gradients"] = worst_error(a.gradients, b.gradients)
    for fact in ("params", "running_mean", "running_var"):
        row[fact] = {}
        row["worst"][fact] = {}
    for step in sorted(b.params):
        row["params"][step], row["worst"]["params"][step] = worst_error(a.params[step], b.params[step])
        if b.running_mean[step]:
            row["running_mean"][step], row["worst"]["running_mean"][step] = worst_error(a.running_mean[step], b.running_mean[step])
            now_a = {k: h[step] for k, h in var_a.items()}
            now_b = {k: h[step] for k, h in b.running_var.items()}
            row["running_var"][step], row["worst"]["running_var"][step] = worst_error(now_a, now_b)
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
    size = min(spec.image_size, 64) if size is None else size
    if steps < 1 or batch < 2 or size < 1:
        raise ParityInputError(f"steps={steps}, size={size}, batch={batch}: steps and size must be >= 1 and batch >= 2 "
                               "(BatchNorm needs two values per channel)")
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
        "recipe": recipe.to_dict(), "settings": {n: traces[n].settings for n in names}, "tolerance": tol, "checkpoints": list(checkpoints),
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
