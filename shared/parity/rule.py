"""The parity rule: does a framework compute what the reference does, within what the dtype itself allows?

The truth is the reference framework (the source whose weights are ported) run in float64 on the
same weights and inputs. The *floor* of a tensor is the reference's own error there in the dtype
under test: ``err(S_d, S_64)``. A target T passes a tensor when

    err(T_d, S_64) <= k * err(S_d, S_64) + atol

with ``k`` and ``atol`` from ``TOLERANCE``; ``err`` is ``relative_error``, max|a - b| / max|b|. In
float64 the floor is zero by definition, so the rule is the fixed float64 bound. The tempting rule
``err(A_d, B_d) <= k * max(floor_A, floor_B)`` with both floors taken against one truth passes for
any k >= 2 (triangle inequality); this one measures each target against the truth, so a target
that is worse than the reference at a tensor fails there.

The floor is a statistic: ``check_tensors`` takes the largest error over the reference's run and its
floor samples, runs of the same function with other rounding (``shared.parity.floor``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from ..errors import ParityInputError
from ..weights import relative_error


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


def rule_for(dtype: str, mode: str, tolerance: float | None, k: float | None = None) -> dict:
    """The rule as the report records it: floor-based from TOLERANCE, or fixed (``tolerance``).

    ``k``: the caller's margin in place of the table's. It is what loosens (or tightens) the floor rule: a tensor
    may be ``k`` times the reference's own error from the truth, so ``k`` twice the table's lets every tensor be
    twice as far; the report records the table's value next to it. It has no meaning beside a fixed ``tolerance``
    or in float64 (a fixed bound), and must be above 0.
    """
    if k is not None:
        if tolerance is not None:
            raise ParityInputError("k (--k) sets the margin of the float64-floor rule and tolerance (--tolerance) "
                                   "replaces that rule with a fixed bound: pass one of them")
        if not k > 0 or not math.isfinite(k):
            raise ParityInputError(f"k={k:g}: the margin over the floor must be a finite number above 0")
        if dtype == "float64":
            raise ParityInputError(f"k={k:g}: float64 runs are checked against the fixed bound "
                                   f"{TOLERANCE['float64'][mode].atol:.0e}, which has no floor to scale; "
                                   "pass k with --dtype float32, bfloat16 or float16")
    if tolerance is not None:
        return {"kind": "fixed", "tolerance": tolerance, "description": f"err(T_{dtype}, S_{dtype}) <= {tolerance:.1e}"}
    bound = TOLERANCE[dtype][mode]
    if dtype == "float64":
        return {"kind": "fixed", "tolerance": bound.atol, "description": f"err(T_64, S_64) <= {bound.atol:.0e}"}
    rule = {"kind": "floor", "k": bound.k if k is None else k, "atol": bound.atol}
    rule["description"] = f"err(T_{dtype}, S_64) <= {rule['k']:g} x err(S_{dtype}, S_64) + {bound.atol:.1e}"
    if k is not None:
        rule["table_k"] = bound.k
        rule["description"] += f" (k set by the caller; the table's: {bound.k:g})"
    return rule


@dataclass
class TensorCheck:
    """One tensor of one framework: its error against the truth, the reference's floor there, and the verdict."""

    name: str
    error: float  # err(T_d, truth)
    floor: float | None  # err(S_d, truth), the largest over the reference's runs; None under a fixed tolerance
    limit: float  # what error may reach
    vs_source: float  # err(T_d, S_d): the pairwise error a fixed-threshold check looks at
    binding: bool = True  # whether the verdict rests on it (training: not the facts of a chaotic trajectory)

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


def check_tensors(names: list[str], got: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray],
                  truth: Mapping[str, np.ndarray] | None, rule: dict,
                  sampled: Mapping[str, float] | None = None) -> list[TensorCheck]:
    """Each named tensor of a target against the reference (``source``, same dtype) and the float64 ``truth``.

    The floor is the reference's own error, or where larger the floor samples' (``sampled``: per tensor the
    largest error of further runs of the reference with other rounding, ``shared.parity.floor``).
    """
    checks = []
    for name in names:
        vs_source = error(got[name], source[name])
        if rule["kind"] == "fixed" or truth is None:
            checks.append(TensorCheck(name, vs_source, None, rule["tolerance"], vs_source))
            continue
        floor = max(error(source[name], truth[name]), (sampled or {}).get(name, 0.0))
        limit = rule["k"] * floor + rule["atol"]
        checks.append(TensorCheck(name, error(got[name], truth[name]), floor, limit, vs_source))
    return checks


def float64_note(label: str, failed: int, worst: TensorCheck, rounding: str, otherwise: str) -> str:
    """The rounding-or-mistake note of a framework that failed a low-precision check, rerun in float64: ``worst`` is
    the furthest of the ``failed`` tensors there, checked with the fixed float64 bound. Within it: ``rounding`` (what
    rounding did), not a port mistake, since a mistake shows in float64 too (unless it lives in the low dtype only,
    such as a statistic kept in bfloat16); beyond it: a port mistake, or ``otherwise``."""
    if worst.passed:
        return (f"{label}: in float64 the {failed} tensors it failed agree with the truth within {worst.limit:g} (worst "
                f"{worst.error:.1e}): {rounding}, not a port mistake, unless the mistake is in this dtype only")
    return (f"{label}: in float64 {worst.name} still differs from the truth ({worst.error:.1e} > {worst.limit:g}): a "
            f"port mistake{otherwise}")


def error(a: np.ndarray, b: np.ndarray) -> float:
    """The project's relative error, ``relative_error``; infinite where the shapes differ."""
    return float("inf") if np.shape(a) != np.shape(b) else relative_error(a, b)
