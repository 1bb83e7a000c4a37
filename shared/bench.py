"""Throughput of our models against each framework's reference model, measured side by side in one process.

Every candidate (ours, and each reference the framework's optional references module can build) runs one eval batch
or one training step per call, synchronised. Candidates are built, called once (the first call: tracing
and compilation), warmed up, then timed in interleaved rounds (the order rotates each round), so a
shared machine's load falls on all of them alike. Reported per candidate: img/s (median over rounds,
with the slowest and fastest round), build time, first-call time and the process's peak memory above
what it held before the build. Per reference: the speed ratio ours/reference, the median of the
per-round ratios with their min..max (> 1: ours is faster).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import frameworks
from .errors import BenchInputError
from .parity.inputs import batch_problem
from .recipe import get_recipe
from .spec import DTYPES, get_spec

MODES = ("eval", "train")
# the training step's optimizer and loss: the embedded digits recipe's (SGD, Nesterov momentum, L2)
RECIPE = "digits"


@dataclass
class Candidate:
    """One model as a framework runs it: ``step()`` runs one batch to completion."""

    framework: str
    role: str  # "ours" or "reference"
    label: str  # what it is, for people: "ours", "torchvision resnet50"
    mode: str
    step: Callable[[], object] | None = None
    build_s: float = math.nan
    first_call_s: float = math.nan
    peak_mb: float | None = None
    iters: int = 1
    times: list[float] = field(default_factory=list)  # seconds per step, one per round

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    def to_dict(self, batch: int) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "step"}
        out.update(median_s=self.median_s, img_s=batch / self.median_s, img_s_min=batch / max(self.times),
                   img_s_max=batch / min(self.times))
        return out


@dataclass
class Ratio:
    """Ours against one reference: the median of the per-round speed ratios (reference time / ours), and their range."""

    framework: str
    mode: str
    reference: str
    median: float
    low: float
    high: float


@dataclass
class BenchReport:
    arch: str
    batch: int
    size: int
    dtype: str
    compile: bool
    repeats: int
    candidates: list[Candidate]
    ratios: list[Ratio]
    notes: list[str]
    machine: dict
    versions: dict

    def to_dict(self) -> dict:
        return {
            "schema_version": 1, "arch": self.arch, "batch": self.batch, "size": self.size, "dtype": self.dtype,
            "compile": self.compile, "repeats": self.repeats, "machine": self.machine, "versions": self.versions,
            "candidates": [c.to_dict(self.batch) for c in self.candidates],
            "ratios": [asdict(r) for r in self.ratios], "notes": self.notes,
        }


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> int | None:
    """The resident memory now, with the peak (VmHWM) reset to it; None where Linux's /proc is not there."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(
    arch: str, *, targets: list[str] | None = None, batch: int = 16, size: int | None = None, mode: str = "both",
    compile: bool = False, dtype: str = "float32", repeats: int = 5, min_round_s: float = 0.5, references: bool = True,
    seed: int = 0,
) -> BenchReport:
    """Time ours and each framework's references in ``mode`` ("eval", "train" or "both") for each framework in
    ``targets`` (default: all installed); see the module docstring.

    ``compile``: torch.compile for PyTorch, XLA (jit_compile=True) for Keras; JAX is always jitted.
    ``min_round_s``: each round repeats a step until it has run at least this long (decided from the warm-up).
    """
    spec = get_spec(arch)
    size = spec.image_size if size is None else size
    modes = MODES if mode == "both" else (mode,)
    if mode != "both" and mode not in MODES:
        raise BenchInputError(f"mode={mode!r}: choose from eval, train, both")
    if dtype not in DTYPES or dtype == "float64":
        raise BenchInputError(f"dtype={dtype!r}: choose from {', '.join(d for d in DTYPES if d != 'float64')}")
    if batch < 1 or size < 1 or repeats < 1:
        raise BenchInputError(f"batch={batch}, size={size}, repeats={repeats}: each must be positive")
    if problem := batch_problem(spec, batch, size):
        raise BenchInputError(problem)
    names = list(dict.fromkeys(map(frameworks.canonical_name, targets or frameworks.installed())))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, size, size, spec.in_channels)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, batch)
    recipe = get_recipe(RECIPE, arch=spec.name)
    notes = []
    if dtype != "float32" and references:
        notes.append("references run in float32 only: no ratios in " + dtype)
        references = False

    candidates: list[Candidate] = []
    for name in names:
        module = frameworks.load_bench(name)
        refs = frameworks.load_references(name) if references else None
        if references and refs is None:
            notes.append(f"{frameworks.LABELS[name]}: no reference models installed ({frameworks.FRAMEWORKS[name].package}"
                         ".references)")
        for m in modes:
            made = [("ours", "ours", lambda m=m: module.ours(spec, m, x, y, recipe, compile=compile, dtype=dtype))]
            if refs is not None:
                found, missing = refs.references(spec, size)
                made += [("reference", label, lambda m=m, b=build: refs.reference_step(b, spec, m, x, y, recipe,
                                                                                       compile=compile))
                         for label, build in found]
                notes += [f"{frameworks.LABELS[name]}: {why}" for why in missing if m == modes[0]]
            for role, label, make in made:
                c = Candidate(name, role, label, m)
                before = _reset_peak()
                c.build_s = _timed(lambda: setattr(c, "step", make()))  # noqa: B023
                c.first_call_s = _timed(c.step)
                warm = _timed(c.step)
                c.iters = max(1, math.ceil(min_round_s / max(warm, 1e-6)))
                peak = _status_kb("VmHWM")
                c.peak_mb = None if before is None or peak is None else (peak - before) / 1024
                candidates.append(c)

    for r in range(repeats):
        shift = r % len(candidates)
        for c in candidates[shift:] + candidates[:shift]:
            start = time.perf_counter()
            for _ in range(c.iters):
                c.step()
            c.times.append((time.perf_counter() - start) / c.iters)

    ratios = []
    for ours in (c for c in candidates if c.role == "ours"):
        for ref in (c for c in candidates if c.role == "reference" and (c.framework, c.mode) == (ours.framework, ours.mode)):
            per_round = [t_ref / t_ours for t_ours, t_ref in zip(ours.times, ref.times)]
            ratios.append(Ratio(ours.framework, ours.mode, ref.label, statistics.median(per_round), min(per_round),
                                max(per_round)))
    for c in candidates:
        c.step = None  # frees the models
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    return BenchReport(spec.name, batch, size, dtype, compile, repeats, candidates, ratios, notes, machine,
                       frameworks.versions(names))

