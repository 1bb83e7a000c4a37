"""Parity: do the frameworks compute what the reference does, within what the dtype itself allows?

The truth is the reference framework (the source whose weights are ported) run in float64 on the
same weights and inputs. The *floor* of a tensor is the reference's own error there in the dtype
under test: ``err(S_d, S_64)``. A target T passes a tensor when

    err(T_d, S_64) <= k * err(S_d, S_64) + atol

with ``k`` and ``atol`` from ``TOLERANCE``; ``err`` is ``relative_error``, max|a - b| / max|b|. In
float64 the floor is zero by definition, so the rule is the fixed float64 bound. The tempting rule
``err(A_d, B_d) <= k * max(floor_A, floor_B)`` with both floors taken against one truth passes for
any k >= 2 (triangle inequality); this one measures each target against the truth, so a target
that is worse than the reference at a tensor fails there.

``compare`` checks eval mode (the stem, every block, the pooled features, the logits);
``shared.train_parity`` checks training steps with the same rule.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from . import checkpoint, frameworks
from .errors import ParityInputError, ResNetParityError
from .spec import DTYPES, ResNetSpec, get_spec
from .weights import count_parameters, randomize, relative_error

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Bound:
    """A tensor passes when err(T_d, S_64) <= k * err(S_d, S_64) + atol (float64: k = 0, atol = the fixed bound)."""

    k: float
    atol: float

    def limit(self, floor: float) -> float:
        return self.k * floor + self.atol


# One rounding unit (unit roundoff) of each low-precision dtype.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "bfloat16": 2.0**-9, "float16": 2.0**-11}

# The one table of tolerances: per dtype, for eval mode and for training steps. README, "Tolerances".
# atol is a few rounding units of the dtype, slack for tensors the reference happens to get within a unit
# or two; k comes from measurement (benchmarks/parity_floors.py): honest ports stay within it on every
# preset, seed and source measured, and every deliberate mistake of tests/test_negative.py,
# tests/test_precision.py and tests/test_training_parity.py lands beyond it (the nearest, decoupled weight
# decay, 14 times its float32 training limit). float32 training needs the larger k: PyTorch's CPU BatchNorm
# (NCHW) gets its per-channel sums closer to the truth than the others' float32 reductions, and those sums
# reach every earlier gradient as one error per channel; ResNet-20's layer3.2.bn1.bias gradient is 7.4e-7
# from the truth in PyTorch, 2.1e-6 in Flax and 1.1e-5 in Keras (and 1.6e-5 in PyTorch on channels-last
# tensors). The largest error/floor ratio of an honest float32 training run measured is 6.5.
TOLERANCE: dict[str, dict[str, Bound]] = {
    "float64": {"eval": Bound(0.0, 1e-12), "train": Bound(0.0, 1e-10)},
    "float32": {"eval": Bound(4.0, UNIT_ROUNDOFF["float32"]), "train": Bound(8.0, 8 * UNIT_ROUNDOFF["float32"])},
    "bfloat16": {"eval": Bound(3.0, UNIT_ROUNDOFF["bfloat16"]), "train": Bound(3.0, UNIT_ROUNDOFF["bfloat16"])},
    "float16": {"eval": Bound(3.0, UNIT_ROUNDOFF["float16"]), "train": Bound(3.0, UNIT_ROUNDOFF["float16"])},
}
# --tolerance's default and convert's verification: a fixed bound on err(T_32, S_32), no float64 run.
FIXED_FLOAT32 = 1e-5


@dataclass
class TensorCheck:
    """One tensor of one framework: its error against the truth, the reference's floor there, and the verdict."""

    name: str
    error: float  # err(T_d, truth)
    floor: float | None  # err(S_d, truth), the largest over the reference's runs; None under a fixed tolerance
    limit: float  # what error may reach
    vs_source: float  # err(T_d, S_d): the pairwise error a fixed-threshold check looks at

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.limit)

    @property
    def ratio(self) -> float | None:
        """error / floor: how many times the reference's own error (1.0 for the reference itself)."""
        if self.floor is None:
            return None
        return self.error / self.floor if self.floor > 0 else (0.0 if self.error == 0 else float("inf"))

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed}


@dataclass
class FrameworkResult:
    """One framework's side of a parity check."""

    framework: str
    reference: bool
    parameters: int
    bn_statistics: int
    counts_match: bool
    checks: list[TensorCheck]
    device: str = ""
    top1_agree: float | None = None  # fraction of the batch whose top-1 class equals the truth's
    top5_agree: float | None = None  # ... whose top-5 set equals the truth's
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def first_divergence(self) -> str | None:
        """The first tensor, in forward order, beyond its limit."""
        return next((c.name for c in self.checks if not c.passed), None)

    @property
    def passed(self) -> bool:
        return self.counts_match and self.first_divergence is None

    def worst(self) -> TensorCheck:
        """The check closest to (or furthest beyond) its limit."""
        return max(self.checks, key=lambda c: c.error / c.limit if c.limit > 0 else float("inf"))

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "checks"}
        return {**out, "first_divergence": self.first_divergence, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass
class ParityReport:
    """What ``compare`` (mode "eval") or ``train_parity`` (mode "train") found; ``to_dict`` is the JSON schema."""

    mode: str
    arch: str
    spec: dict
    source: str
    dtype: str
    rule: dict
    inputs: dict
    weights: dict
    settings: dict[str, dict[str, str]]
    versions: dict[str, dict[str, str]]
    expected_parameters: int
    expected_bn_statistics: int
    results: list[FrameworkResult]
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # mode-specific facts (train: steps, recipe, losses)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def first_divergence(self) -> str | None:
        """The earliest tensor, in forward order, where any framework goes beyond its limit."""
        order = {c.name: i for r in self.results for i, c in enumerate(r.checks)}
        found = [r.first_divergence for r in self.results if r.first_divergence]
        return min(found, key=order.get) if found else None

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        return {"schema_version": SCHEMA_VERSION, **out, "first_divergence": self.first_divergence,
                "passed": self.passed, "results": [r.to_dict() for r in self.results]}

    def table(self, per_layer: bool = False) -> str:
        """The report for people: one row per tensor (by default the stem, each stage's end and the head)."""
        return format_table(self, per_layer)

    def junit(self) -> str:
        """JUnit XML: one test case per (reference, target) pair, failing with the first divergence."""
        return format_junit(self)


# --------------------------------------------------------------------------- the check


def rule_for(dtype: str, mode: str, tolerance: float | None) -> dict:
    """The rule as the report records it: floor-based from TOLERANCE, or fixed (``tolerance``)."""
    if tolerance is not None:
        return {"kind": "fixed", "tolerance": tolerance, "description": f"err(T_{dtype}, S_{dtype}) <= {tolerance:.1e}"}
    bound = TOLERANCE[dtype][mode]
    if dtype == "float64":
        return {"kind": "fixed", "tolerance": bound.atol, "description": f"err(T_64, S_64) <= {bound.atol:.0e}"}
    return {"kind": "floor", "k": bound.k, "atol": bound.atol,
            "description": f"err(T_{dtype}, S_64) <= {bound.k:g} x err(S_{dtype}, S_64) + {bound.atol:.1e}"}


def check_tensors(names: list[str], got: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray],
                  truth: Mapping[str, np.ndarray] | None, rule: dict,
                  samples: Sequence[Mapping[str, np.ndarray]] = ()) -> list[TensorCheck]:
    """Each named tensor of a target against the reference (``source``, same dtype) and the float64 ``truth``.

    The floor is the reference's own error; ``samples``, further runs of the reference that compute the same
    function with other rounding, make it the largest of those errors.
    """
    checks = []
    for name in names:
        vs_source = _error(got[name], source[name])
        if rule["kind"] == "fixed" or truth is None:
            checks.append(TensorCheck(name, vs_source, None, rule["tolerance"], vs_source))
            continue
        floor = max(_error(run[name], truth[name]) for run in (source, *samples))
        limit = rule["k"] * floor + rule["atol"]
        checks.append(TensorCheck(name, _error(got[name], truth[name]), floor, limit, vs_source))
    return checks


def _error(a: np.ndarray, b: np.ndarray) -> float:
    if np.shape(a) != np.shape(b):
        return float("inf")
    return relative_error(a, b)


def eval_tensors(spec: ResNetSpec) -> list[str]:
    """The features eval parity checks, in forward order: the stem, every block, the pooled features, the logits."""
    return ["stem", *(plan.prefix for plan in spec.blocks()), "avgpool", "fc"]


def versions(names: list[str]) -> dict[str, dict[str, str]]:
    """Each framework's packages and their versions."""
    out = {}
    for name in names:
        out[name] = {}
        for dist in frameworks.FRAMEWORKS[name].distributions:
            try:
                out[name][dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[name][dist] = "not installed"
    return out


def load_inputs(inputs: np.ndarray | str | os.PathLike, spec: ResNetSpec) -> np.ndarray:
    """A user's NHWC batch (array or .npy file), checked: rank 4, the spec's channels, floating point, finite."""
    origin = inputs
    if not isinstance(inputs, np.ndarray):
        try:
            inputs = np.load(Path(inputs), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ParityInputError(f"{origin}: not a readable .npy array: {checkpoint.one_line(exc)}") from exc
    if inputs.ndim != 4:
        raise ParityInputError(f"{_label(origin)}: an NHWC batch has 4 axes, this one has shape {inputs.shape}")
    if inputs.shape[-1] != spec.in_channels:
        raise ParityInputError(f"{_label(origin)}: shape {inputs.shape} has {inputs.shape[-1]} channels last, "
                               f"{spec.name} takes {spec.in_channels} (NHWC)")
    if inputs.dtype.name not in ("float16", "bfloat16", "float32", "float64"):
        raise ParityInputError(f"{_label(origin)}: holds {inputs.dtype} values; pass floating-point images, "
                               "normalised as the model expects")
    if not np.isfinite(inputs.astype(np.float64)).all():
        raise ParityInputError(f"{_label(origin)}: holds NaN or Inf")
    if min(inputs.shape[:3]) < 1:
        raise ParityInputError(f"{_label(origin)}: an empty batch, shape {inputs.shape}")
    return inputs


def _label(origin) -> str:
    return "the input array" if isinstance(origin, np.ndarray) else str(origin)


def participants(source: str, targets: list[str] | None) -> tuple[str, list[str]]:
    """(the reference, every framework checked, the reference first); all installed by default."""
    source = frameworks.canonical_name(source)
    names = dict.fromkeys(map(frameworks.canonical_name, targets or frameworks.installed()))
    return source, [source, *(n for n in names if n != source)]


def starting_weights(arch: str | ResNetSpec | None, weights, weights_format: str | None, dtype: str, seed: int
                     ) -> tuple[ResNetSpec, dict[str, np.ndarray], dict, list[str]]:
    """(spec, canonical weights, what to record, notes): the user's checkpoint, or random weights for ``arch``
    (every tensor, BN statistics included; float64 when ``dtype`` is)."""
    if dtype not in DTYPES:
        raise ParityInputError(f"dtype={dtype!r}: choose from {', '.join(DTYPES)}")
    if weights is not None:
        return load_weights(weights, arch, weights_format)
    if arch is None:
        raise ParityInputError("pass arch=NAME, or weights=FILE to check a checkpoint")
    spec = get_spec(arch)
    initial = randomize(spec, seed, np.float64 if dtype == "float64" else np.float32)
    return spec, initial, {"origin": "random", "seed": seed}, []


def load_weights(weights: Mapping[str, np.ndarray] | str | os.PathLike, arch: str | ResNetSpec | None,
                 fmt: str | None = None) -> tuple[ResNetSpec, dict[str, np.ndarray], dict, list[str]]:
    """(spec, float32 canonical weights, what to record, notes) from a checkpoint file any reader takes, or a dict."""
    if isinstance(weights, Mapping):
        if arch is None:
            raise ParityInputError("weights given as a dict need arch=NAME")
        spec = get_spec(arch)
        prepared, notes = checkpoint.prepare(weights, spec, Path("weights"))
        return spec, prepared, {"origin": "dict"}, notes
    path = Path(weights)
    ckpt = checkpoint.read(path, fmt, arch)
    spec, notes = checkpoint.architecture(ckpt, path, arch)
    prepared, dtype_notes = checkpoint.prepare(ckpt.weights, spec, path)
    return spec, prepared, {"origin": str(path), "format": ckpt.format.name}, ckpt.notes + notes + dtype_notes


def top_k_agreement(logits: np.ndarray, truth: np.ndarray, k: int) -> float:
    """The fraction of the batch whose top-k classes (as a set; k = 1: the class) equal the truth's."""
    k = min(k, logits.shape[-1])
    ours = np.sort(np.argsort(-logits.astype(np.float64), axis=-1)[:, :k], axis=-1)
    theirs = np.sort(np.argsort(-truth.astype(np.float64), axis=-1)[:, :k], axis=-1)
    return float(np.mean(np.all(ours == theirs, axis=-1)))


ModelFactory = Callable[[ResNetSpec, Mapping[str, np.ndarray], str], object]  # (spec, weights, dtype) -> model


def compare(
    arch: str | ResNetSpec | None = None, *, weights: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    weights_format: str | None = None, inputs: np.ndarray | str | os.PathLike | None = None, source: str = "torch",
    targets: list[str] | None = None, dtype: str = "float32", size: int | None = None, batch: int = 2, seed: int = 0,
    tolerance: float | None = None, device: str = "cpu", models: Mapping[str, ModelFactory] | None = None,
) -> ParityReport:
    """Port the source framework's weights to the others and check every block's output in eval mode.

    ``weights``: a checkpoint file (any format ``shared.checkpoint`` reads, ``weights_format`` where its
    suffix does not say) or a canonical dict; default:
    random weights, every tensor randomised (BN statistics included). ``inputs``: an NHWC array or .npy
    file; default: a random batch of ``batch`` images of side ``size``. ``tolerance``: a fixed bound on
    the pairwise error instead of the float64-floor rule. ``models``: framework -> factory(spec, weights,
    dtype) returning a model that holds the ported weights, in place of the framework's own
    ``model_from_weights`` (tests inject deliberate mistakes this way).
    """
    source, names = participants(source, targets)
    spec, initial, weights_record, notes = starting_weights(arch, weights, weights_format, dtype, seed)
    if inputs is None:
        size = spec.image_size if size is None else size
        if size < 1 or batch < 1:
            raise ParityInputError(f"size={size}, batch={batch}: both must be positive")
        x = np.random.default_rng(seed).standard_normal((batch, size, size, spec.in_channels))
        x = x.astype(np.float64 if dtype == "float64" else np.float32)
        inputs_record = {"origin": "random", "seed": seed, "shape": list(x.shape)}
    else:
        x = load_inputs(inputs, spec)
        inputs_record = {"origin": _label(inputs), "shape": list(x.shape)}
    rule = rule_for(dtype, "eval", tolerance)
    models = models or {}
    params, stats = count_parameters(spec)

    outputs, counts, timings, devices = {}, {}, {}, {}
    for name in names:
        start = time.perf_counter()
        frameworks.load(name)
        timings[name] = {"import_s": time.perf_counter() - start}
    with frameworks.numerics(names, dtype, device) as settings:
        ported = None
        for name in names:
            impl, t = frameworks.load(name), timings[name]
            try:
                start = time.perf_counter()
                # built straight from the weights: no random initialisation to throw away
                port = models.get(name, frameworks.load_checkpoints(name).model_from_weights)
                model = port(spec, initial if ported is None else ported, dtype)
                if ported is None:  # what the source holds is what gets ported
                    ported = impl.export_weights(model)
                t["build_s"] = time.perf_counter() - start
                start = time.perf_counter()
                outputs[name] = impl.features(model, x)
                t["forward_s"] = time.perf_counter() - start
            except ResNetParityError:
                raise
            except Exception as exc:  # e.g. a kernel the framework lacks for this dtype here; --debug shows it
                raise ParityInputError(f"{frameworks.LABELS[name]} cannot run {spec.name} in {dtype} on {device}: "
                                       f"{checkpoint.one_line(exc)}") from exc
            counts[name] = count_parameters(spec, impl.export_weights(model))
            devices[name] = settings[name]["device"]
        truth = None
        if rule["kind"] == "floor":
            start = time.perf_counter()
            truth = _truth(source, spec, ported, x, device)
            timings[source]["truth_s"] = time.perf_counter() - start

    tensors = eval_tensors(spec)
    results = []
    for name in names:
        checks = check_tensors(tensors, outputs[name], outputs[source], truth, rule)
        top = (truth or outputs[source])["fc"]
        results.append(FrameworkResult(
            name, name == source, *counts[name], counts[name] == (params, stats), checks, devices[name],
            top_k_agreement(outputs[name]["fc"], top, 1), top_k_agreement(outputs[name]["fc"], top, 5), timings[name],
        ))
    return ParityReport(
        "eval", spec.name, asdict(spec), source, dtype, rule, inputs_record, weights_record, settings, versions(names),
        params, stats, results, notes,
    )


def _truth(source: str, spec: ResNetSpec, weights: Mapping[str, np.ndarray], x: np.ndarray, device: str) -> dict:
    """The reference framework's features in float64, on the ported weights and the same inputs."""
    with frameworks.load(source).numerics("float64", device):
        wide = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        model = frameworks.load_checkpoints(source).model_from_weights(spec, wide, "float64")
        return frameworks.load(source).features(model, np.asarray(x, np.float64))


def assert_parity(*args, per_layer: bool = True, **kwargs) -> ParityReport:
    """``compare``, raising AssertionError with the report's table when any framework fails; for pytest suites."""
    report = compare(*args, **kwargs)
    if not report.passed:
        raise AssertionError("\n" + report.table(per_layer=per_layer))
    return report


# --------------------------------------------------------------------------- reports


def _fmt(value: float | None, spec: str = ".1e") -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else format(value, spec)


def table_rows(report: ParityReport, per_layer: bool) -> list[tuple[str, dict[str, TensorCheck]]]:
    """(row label, framework -> the check shown). Eval mode shows the stem, each stage's last block, the pooled
    features and the logits (every block with ``per_layer``); training shows each fact's worst tensor per
    framework (every tensor with ``per_layer``). The first divergence always has its row."""
    checks = {r.framework: {c.name: c for c in r.checks} for r in report.results}
    names = [c.name for c in report.results[0].checks]
    divergence = report.first_divergence
    if per_layer:
        return [(n, {fw: cs[n] for fw, cs in checks.items()}) for n in names]
    if report.mode == "eval":
        last = {n.split(".")[0]: n for n in names if n.startswith("layer")}
        keep = {"stem", "avgpool", "fc", divergence, *last.values()}
        return [(n, {fw: cs[n] for fw, cs in checks.items()}) for n in names if n in keep]
    from .train_parity import fact_of  # training tensors are named 'fact key'

    rows = []
    for fact in dict.fromkeys(map(fact_of, names)):
        group = [n for n in names if fact_of(n) == fact]
        worst = {fw: max((cs[n] for n in group), key=lambda c: c.error / c.limit if c.limit else float("inf"))
                 for fw, cs in checks.items()}
        rows.append((fact, worst))
    if divergence:
        rows.append((divergence, {fw: cs[divergence] for fw, cs in checks.items()}))
    return rows


def format_table(report: ParityReport, per_layer: bool = False) -> str:
    """The human-readable report: per tensor, each framework's error, the floor and their ratio."""
    rule = report.rule
    floor_rule = rule["kind"] == "floor"
    what = ("eval mode" if report.mode == "eval" else
            f"{report.extra['steps']} training steps of {report.extra['recipe']['optimizer']['kind']}, "
            f"batch {report.extra['batch']}")
    lines = [
        f"resnet-parity compare: {report.arch}, {report.dtype}, {what}, reference {frameworks.LABELS[report.source]}, "
        f"input NHWC {tuple(report.inputs['shape'])} ({report.inputs['origin']}), weights {report.weights['origin']}",
        f"rule: {rule['description']}" + ("" if not floor_rule else
                                          f"; floor = the reference's own {report.dtype} error against its float64 run"),
    ]
    if report.extra.get("devices", 1) > 1:
        n, source = report.extra["devices"], frameworks.LABELS[report.source]
        lines.append(f"data parallel: every framework on {n} replicas of its own engine, " + (
            f"BN synchronised over the global batch; reference: {source} on one device, batch {report.extra['batch']}"
            if report.extra["sync_bn"] else
            f"BN per replica, running statistics replica 0's; reference: {source} on one device, each of the {n} "
            "shards normalised on its own"))
    if report.mode == "train":
        lines.append("BN running variance compared in the reference's convention: "
                     + ", ".join(f"{frameworks.LABELS[n]} {c}" for n, c in report.extra["bn_variance"].items()))
        if report.mode == "train" and not per_layer:
            lines.append("each row: the tensor of that fact furthest towards its limit, per framework")
    lines += [f"note: {note}" for note in report.notes]
    rows = table_rows(report, per_layer)
    width = max(len(label) for label, _ in [*rows, ("tensor", None)])
    head, sub = f"{'tensor':<{width}}", " " * width
    for r in report.results:
        label = frameworks.LABELS[r.framework] + (" (ref)" if r.reference else "")
        head += f" | {label:^33}" if floor_rule else f" | {label:^16}"
        sub += f" | {'error':>8} {'floor':>8} {'ratio':>7} {'ok':>5}" if floor_rule else f" | {'error':>10} {'ok':>5}"
    lines += [head, sub, "-" * len(sub)]
    for label, cells in rows:
        row = f"{label:<{width}}"
        for r in report.results:
            c = cells[r.framework]
            verdict = "ok" if c.passed else "FAIL"
            row += (f" | {_fmt(c.error):>8} {_fmt(c.floor):>8} {_fmt(c.ratio, '.2f'):>7} {verdict:>5}" if floor_rule
                    else f" | {_fmt(c.error):>10} {verdict:>5}")
        lines.append(row)
    lines.append("-" * len(sub))
    for r in report.results:
        parts = [f"{frameworks.LABELS[r.framework]:<9}",
                 f"parameters {r.parameters:,} + {r.bn_statistics:,} BN statistics"
                 + ("" if r.counts_match else f" (expected {report.expected_parameters:,} + "
                                               f"{report.expected_bn_statistics:,}: FAIL)")]
        if report.inputs["origin"] not in ("random",) and r.top1_agree is not None:
            parts.append(f"top-1 agrees {100 * r.top1_agree:.0f}%, top-5 {100 * r.top5_agree:.0f}%")
        parts.append(f"first divergence: {r.first_divergence or 'none'}")
        parts.append("PASS" if r.passed else "FAIL")
        lines.append(" | ".join(parts))
    if floor_rule:
        lines.append(f"ratio = error / floor; a tensor passes while error <= {rule['k']:g} x floor + {rule['atol']:.1e}")
    lines.append("all frameworks agree" if report.passed else
                 f"MISMATCH: first divergence at {report.first_divergence or 'the parameter counts'}")
    return "\n".join(lines)


def format_junit(report: ParityReport) -> str:
    """JUnit XML with one test case per (reference, target) pair."""
    cases = []
    for r in report.results:
        if r.reference:
            continue
        name = quoteattr(f"{report.source} -> {r.framework}")
        classname = quoteattr(f"resnet-parity.{report.mode}.{report.arch}.{report.dtype}")
        seconds = sum(r.timings.values())
        if r.passed:
            cases.append(f"  <testcase classname={classname} name={name} time=\"{seconds:.3f}\"/>")
            continue
        worst = r.worst()
        message = (f"first divergence: {r.first_divergence or 'parameter counts'}; worst {worst.name}: "
                   f"error {_fmt(worst.error)} against a limit of {_fmt(worst.limit)}")
        detail = "\n".join(f"{c.name}: error {_fmt(c.error)} floor {_fmt(c.floor)} limit {_fmt(c.limit)}"
                           for c in r.checks if not c.passed)
        cases.append(f"  <testcase classname={classname} name={name} time=\"{seconds:.3f}\">\n"
                     f"    <failure message={quoteattr(message)}>{escape(detail)}</failure>\n  </testcase>")
    failures = sum(1 for r in report.results if not r.reference and not r.passed)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="resnet-parity compare" '
            f'tests="{len(cases)}" failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")
