"""The floor of the parity rule: how far from the float64 truth an honest implementation's rounding can land.

One run of the reference gives one realisation of its rounding, not a bound on what honest rounding does. Where
that run is lucky (an average pool over 64 positions shrinks independent errors eightfold), an honest target whose
rounding is correlated across positions (a per-channel BatchNorm scale ``gamma * rsqrt(var + eps)`` rounded once)
lands many times above it. So the floor of a tensor is the largest error against the truth over the reference's
run and ``FLOOR_SAMPLES`` more runs of the same function rounded otherwise (``rounded_otherwise``): every
parameter, every BN statistic and every input value moved by one or two units in the last place of the dtype, up
or down at random. A parameter moved so is a per-channel constant rounded another way, which is exactly the
correlated error above; an input moved so moves every activation by about as much as another framework's rounding
does, so a pre-activation within rounding of a ReLU kink flips in some samples as it does in some frameworks.
Training samples also reorder each batch's examples (the same sums in another order).

The rounding here is numpy only; the runs themselves go through each framework's public ``model_from_weights``
and ``features`` (eval, ``eval_runs``) or its trainer (training, ``shared.parity.training.floor_runs``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import frameworks
from ..spec import ResNetSpec
from .rule import UNIT_ROUNDOFF, error

FLOOR_SAMPLES = 4
DESCRIPTION = ("the largest error against the float64 run of the reference's own run and of runs of it with every "
               "parameter, BN statistic and input value rounded otherwise")
# A tensor beyond its limit by at most GREY_BAND times is re-judged with GREY_SAMPLES more samples before it is
# called a FAIL: rounding is a few times the floor at most, a port mistake 10 to 10^6 times (issue 18's tables).
GREY_BAND = 2.0
GREY_SAMPLES = 12


def rounded_otherwise(x: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` with every value moved by one to two units in the last place of ``dtype``, up or down at random."""
    step = 2 * UNIT_ROUNDOFF[dtype] * rng.choice([-1.0, 1.0], size=np.shape(x))
    return (np.asarray(x, np.float64) * (1 + step)).astype(np.asarray(x).dtype)


def sample(weights: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray], dtype: str, rng: np.random.Generator
           ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """One floor sample's starting point: every weight (parameters and BN statistics) and every input rounded otherwise."""
    return ({k: rounded_otherwise(v, dtype, rng) for k, v in weights.items()},
            [rounded_otherwise(x, dtype, rng) for x in inputs])


Sampled = dict[str, float]  # per tensor, the largest error of the floor samples against the truth


def largest_errors(runs: Iterable[Mapping[str, np.ndarray]], truth: Mapping[str, np.ndarray]) -> Sampled:
    """Per tensor of ``truth``, the largest error of ``runs`` against it; each run is dropped once measured."""
    out: Sampled = {}
    for run in runs:
        for name, value in truth.items():
            out[name] = max(out.get(name, 0.0), error(run[name], value))
    return out


def eval_runs(source: str, spec: ResNetSpec, weights: Mapping[str, np.ndarray], x: np.ndarray, dtype: str, *,
              device: str = "cpu", seed: int | Sequence[int] = 0, count: int = FLOOR_SAMPLES
              ) -> Iterator[dict[str, np.ndarray]]:
    """``count`` eval runs of ``source`` in ``dtype``, each on the weights and inputs rounded otherwise (``sample``)."""
    rng = np.random.default_rng(seed)
    impl, backend = frameworks.load(source), frameworks.load_checkpoints(source)
    model = None
    for _ in range(count):
        moved, (moved_x,) = sample(weights, [x], dtype, rng)
        with impl.numerics(dtype, device):
            if model is None:
                model = backend.model_from_weights(spec, moved, dtype)
            else:
                impl.import_weights(model, moved)
            features = impl.features(model, moved_x)
        yield features


Checks = Sequence  # one framework's list of shared.parity.rule.TensorCheck


def in_grey_band(checks: Checks) -> list[str]:
    """The tensors beyond their limit by at most GREY_BAND times."""
    return [c.name for c in checks if c.limit < c.error <= GREY_BAND * c.limit]


def judged(draw: Callable[[int, int], Sampled], judge: Callable[[Sampled], Mapping[str, Checks]],
           notes: list[str]) -> Sampled:
    """The floor samples a verdict rests on, as their largest errors: ``draw(0, FLOOR_SAMPLES)``, and
    ``draw(1, GREY_SAMPLES)`` more when ``judge(sampled)`` (framework -> its checks) puts a tensor in the grey band;
    a note then says where."""
    sampled = draw(0, FLOOR_SAMPLES)
    grey = {name: found for name, checks in judge(sampled).items() if (found := in_grey_band(checks))}
    if grey:
        more = draw(1, GREY_SAMPLES)
        sampled = {name: max(sampled.get(name, 0.0), more.get(name, 0.0)) for name in sampled.keys() | more.keys()}
        where = "; ".join(f"{frameworks.LABELS[name]} {', '.join(found[:3])}{' ...' if len(found) > 3 else ''}"
                          for name, found in grey.items())
        notes.append(f"grey band: {where} beyond the limit by at most {GREY_BAND:g} times with {FLOOR_SAMPLES} floor "
                     f"samples, re-judged with {FLOOR_SAMPLES + GREY_SAMPLES}")
    return sampled
