"""Training parity one step at a time: every step starts each framework from the float64 truth's state.

The cumulative check (``shared.parity.training``) follows each framework's own trajectory for K steps. Where the
trajectory is chaotic (a pre-activation within rounding of a ReLU kink, clipped in one framework only, changes
a gradient outright, and later steps amplify it), the facts after step K say little about step K itself. Here
step s starts every framework from the truth's state after step s - 1 (weights, BN statistics and optimizer
state, in the dtype under test) and runs batch s once; the state after it is checked against the truth's
after step s, with the rule and floor of ``shared.parity.rule``, so each step's facts are judged on their own.

Facts, named ``alone@s <key>``: every parameter, BN running mean and variance (the variance re-expressed in the
reference's convention, as the cumulative check does) and optimizer slot (``momentum_buffer.<key>``, ...).
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from .. import frameworks
from ..recipe import Convention, Recipe, bn_sample_counts, convert_running_var
from ..spec import ResNetSpec
from .floor import Sampled, judged, largest_errors, sample
from .rule import TensorCheck, check_tensors

State = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (canonical weights, canonical optimizer state)

PREFIX = "alone"


def after_step_one(name: str) -> bool:
    """Whether a cumulative training fact ('params@5 layer1.0.conv1.weight') comes from after step 1."""
    fact = name.split(" ")[0]
    return "@" in fact and not fact.startswith(PREFIX) and int(fact.split("@")[1]) > 1


def trajectory_notes(results: Sequence) -> list[str]:
    """A note per framework whose own trajectory went beyond a limit after step 1 (checks that no longer decide the
    verdict once every step is checked alone) while each of its steps taken alone stayed within it."""
    notes = []
    for result in results:
        over = [c.name for c in result.checks if not c.binding and not c.passed]
        if over and result.first_divergence is None:
            notes.append(f"{frameworks.LABELS[result.framework]}: {', '.join(over[:3])}{' ...' if len(over) > 3 else ''} "
                         "beyond the limit on its own trajectory, while every step taken alone is within it: rounding "
                         "amplified by the steps (a pre-activation within rounding of a ReLU kink, clipped in one run "
                         "only); the verdict rests on step 1 and the steps taken alone")
    return notes


def states(name: str, spec: ResNetSpec, weights: Mapping[str, np.ndarray], batches: Sequence[tuple[np.ndarray, np.ndarray]],
           recipe: Recipe, *, dtype: str, device: str = "cpu") -> Iterator[State]:
    """A framework's (weights, optimizer state) before the first step and after each of ``batches``, one at a time."""
    impl, trainer = frameworks.load(name), frameworks.load_trainer(name)
    with impl.numerics(dtype, device):
        model = frameworks.load_checkpoints(name).model_from_weights(spec, weights, dtype)
        optimizer = trainer.make_optimizer(model, recipe, len(batches))
        state = (impl.export_weights(model), trainer.export_optimizer_state(model, optimizer))
    yield state
    for x, y in batches:
        with impl.numerics(dtype, device):
            trainer.train_step(model, optimizer, x, y, recipe)
            state = (impl.export_weights(model), trainer.export_optimizer_state(model, optimizer))
        yield state


class Stepper:
    """One framework taking single steps, each from a state it is given: ``stepper(start, (x, y))`` -> the state after.

    One model and optimizer serve every step (the schedule spans ``total_steps``; the state's ``step`` says where)."""

    def __init__(self, name: str, spec: ResNetSpec, recipe: Recipe, *, total_steps: int, dtype: str, device: str = "cpu"):
        self.impl, self.trainer = frameworks.load(name), frameworks.load_trainer(name)
        self.name, self.spec, self.recipe, self.total_steps, self.dtype, self.device = name, spec, recipe, total_steps, dtype, device
        self.wide = np.float64 if dtype == "float64" else np.float32  # mixed precision keeps float32 weights and state
        self.model = self.optimizer = None

    def __call__(self, start: State, batch: tuple[np.ndarray, np.ndarray]) -> State:
        weights = {k: np.asarray(v, self.wide) for k, v in start[0].items()}
        state = {k: v if k == "step" else np.asarray(v, self.wide) for k, v in start[1].items()}
        with self.impl.numerics(self.dtype, self.device):
            if self.model is None:
                self.model = frameworks.load_checkpoints(self.name).model_from_weights(self.spec, weights, self.dtype)
                self.optimizer = self.trainer.make_optimizer(self.model, self.recipe, self.total_steps)
            else:
                self.impl.import_weights(self.model, weights)
            self.trainer.import_optimizer_state(self.model, self.optimizer, state)
            self.trainer.train_step(self.model, self.optimizer, *batch, self.recipe)
            return self.impl.export_weights(self.model), self.trainer.export_optimizer_state(self.model, self.optimizer)


def steps_alone(name: str, spec: ResNetSpec, starts: Sequence[State], batches: Sequence[tuple[np.ndarray, np.ndarray]],
                recipe: Recipe, *, total_steps: int, dtype: str, device: str = "cpu") -> list[State]:
    """One step on each of ``batches``, each from its own start in ``starts``: the state after each step taken alone."""
    step = Stepper(name, spec, recipe, total_steps=total_steps, dtype=dtype, device=device)
    return [step(start, batch) for start, batch in zip(starts, batches)]


def facts(after: Sequence[State], starts: Sequence[State], spec: ResNetSpec, batch: int, size: int, first: int,
          convention: Convention, reference: Convention) -> dict[str, np.ndarray]:
    """Each step's state as named tensors, ``alone@s key`` from step ``first`` on: weights (the running variance in
    the ``reference`` convention, re-expressed from the step's start) and optimizer slots."""
    counts = bn_sample_counts(spec, batch, size)
    out = {}
    for s, ((weights, state), (start, _)) in enumerate(zip(after, starts), start=first):
        for key, value in weights.items():
            if key.endswith(".running_var"):
                value = convert_running_var([start[key], value], counts[key[: -len(".running_var")]], spec.bn_momentum,
                                            convention, reference)[1]
            out[f"{PREFIX}@{s} {key}"] = value
        out.update({f"{PREFIX}@{s} {key}": value for key, value in state.items() if key != "step"})
    return out


def less_start_move(got: dict[str, np.ndarray], moved: State, start: State) -> dict[str, np.ndarray]:
    """A floor sample's facts less its start's move (as ``shared.parity.training.less_start_move``): in one step a
    stored value keeps its start (parameters) or momentum times it (BN statistics, optimizer slots: 0.9 and more),
    so subtracting the whole move leaves a tenth of a move at most."""
    begun = {**start[0], **start[1]}
    out = {}
    for key, value in got.items():
        k = key.split(" ", 1)[1]
        out[key] = value - (np.asarray({**moved[0], **moved[1]}[k], np.float64) - np.asarray(begun[k], np.float64))
    return out


def check_steps_alone(
    source: str, names: Sequence[str], spec: ResNetSpec, weights64: Mapping[str, np.ndarray],
    batches: Sequence[tuple[np.ndarray, np.ndarray]], recipe: Recipe, rule: dict, *, dtype: str, device: str, seed: int,
    notes: list[str],
) -> dict[str, list[TensorCheck]]:
    """Every framework's steps 2..K, each from the float64 truth's state (the reference in float64 from
    ``weights64``), against the truth's next state. The floor: the reference's own step, and floor samples from
    the truth's state rounded otherwise (weights, BN statistics, optimizer slots and inputs: ``shared.parity.floor.sample``)
    on the batch reordered, more in the grey band (``shared.parity.floor.judged``, whose note joins ``notes``). One step at a
    time: a ResNet-50 state holds 200 MB in float32."""
    batch, size = len(batches[0][0]), batches[0][0].shape[1]
    conventions = {n: frameworks.load_trainer(n).BN_RUNNING_VAR for n in names}
    steppers = {n: Stepper(n, spec, recipe, total_steps=len(batches), dtype=dtype, device=device) for n in names}
    truth = states(source, spec, weights64, [(x.astype(np.float64), y) for x, y in batches], recipe, dtype="float64",
                   device=device)
    next(truth)
    previous = next(truth)
    checks: dict[str, list[TensorCheck]] = {n: [] for n in names}
    for s, ((x, y), after) in enumerate(zip(batches[1:], truth), start=2):
        def named(name: str, state: State, begun: State) -> dict[str, np.ndarray]:
            return facts([state], [begun], spec, batch, size, s, conventions[name], conventions[source])

        true = named(source, after, previous)
        runs = {n: named(n, steppers[n](previous, (x, y)), previous) for n in names}

        def draw(more: int, count: int) -> Sampled:
            rng = np.random.default_rng([seed, s, more])

            def samples() -> Iterator[dict[str, np.ndarray]]:
                for _ in range(count):
                    order = rng.permutation(batch)
                    moved, (moved_x,) = sample({**previous[0], **{k: v for k, v in previous[1].items() if k != "step"}},
                                               [x[order]], dtype, rng)
                    start = ({k: moved[k] for k in previous[0]},
                             {k: (moved[k] if k != "step" else v) for k, v in previous[1].items()})
                    got = named(source, steppers[source](start, (moved_x, y[order])), start)
                    yield less_start_move(got, start, previous)

            return largest_errors(samples(), true)

        def judge(sampled: Sampled) -> dict[str, list[TensorCheck]]:
            return {n: check_tensors(list(true), runs[n], runs[source], true, rule, sampled) for n in names}

        judgement = judge(judged(draw, lambda found: {n: c for n, c in judge(found).items() if n != source}, notes))
        for n in names:
            checks[n] += judgement[n]
        previous = after
    return checks
