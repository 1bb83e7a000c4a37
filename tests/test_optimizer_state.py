"""The optimizer's state in canonical names: every framework exports torch's slots and step, and continues from any
framework's export exactly as that framework continues itself (float64, so exactly means to rounding)."""

from __future__ import annotations

import numpy as np
import pytest

from shared import frameworks
from shared.parity import TOLERANCE
from shared.recipe import OPTIMIZER_SLOTS, SGD, Adam, Recipe, Schedule
from shared.spec import get_spec
from shared.parity.training import random_batches
from shared.weights import BN_STAT_SUFFIXES, randomize, relative_error

NAMES = ["torch", "tf", "jax"]
WARMUP = Schedule("cosine", warmup_steps=2)  # the learning rate changes every step: a wrong step count shows
RECIPES = {
    "sgd": Recipe("sgd", "resnet20", "random", SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), schedule=WARMUP),
    "adam": Recipe("adam", "resnet20", "random", Adam(lr=1e-2, weight_decay=1e-2), schedule=WARMUP),
    "plain": Recipe("plain", "resnet20", "random", SGD(lr=0.1), schedule=WARMUP),
}
SPEC = get_spec("resnet20")
BOUND = TOLERANCE["float64"]["train"].atol


def trained(name: str, recipe: Recipe, steps: int, start=None) -> list[tuple[dict, dict]]:
    """(weights, optimizer state) after each of ``steps`` steps of ``recipe`` in float64, the start first; ``start``:
    (weights, state) after two steps, continued on the third batch."""
    impl, trainer = frameworks.load(name), frameworks.load_trainer(name)
    batches = random_batches(SPEC, 3, 4, 16, 0, "float64")
    with impl.numerics("float64"):
        weights, state = start or (randomize(SPEC, 0, np.float64), None)
        model = frameworks.load_checkpoints(name).model_from_weights(SPEC, weights, "float64")
        optimizer = trainer.make_optimizer(model, recipe, len(batches))
        if state is not None:
            trainer.import_optimizer_state(model, optimizer, state)
        out = [(impl.export_weights(model), trainer.export_optimizer_state(model, optimizer))]
        for x, y in batches[3 - steps:] if start else batches[:steps]:
            trainer.train_step(model, optimizer, x, y, recipe)
            out.append((impl.export_weights(model), trainer.export_optimizer_state(model, optimizer)))
        return out


def distance(a: tuple, b: tuple) -> float:
    """The largest relative error over the parameters and the optimizer state."""
    weights = [relative_error(a[0][k], b[0][k]) for k in a[0] if not k.endswith(BN_STAT_SUFFIXES)]
    return max(weights + [relative_error(a[1][k], b[1][k]) for k in a[1]])


@pytest.fixture(scope="module")
def runs():
    """(name, recipe) -> the states after 0, 1, 2 and 3 steps."""
    cache = {}

    def get(name, recipe):
        if (name, recipe) not in cache:
            cache[name, recipe] = trained(name, RECIPES[recipe], 3)
        return cache[name, recipe]

    return get


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_framework_exports_torchs_slots(runs, recipe):
    opt = RECIPES[recipe].optimizer
    slots = () if isinstance(opt, SGD) and not opt.momentum else OPTIMIZER_SLOTS[type(opt).__name__.lower()]
    params = [k for k in randomize(SPEC, 0) if not k.endswith(BN_STAT_SUFFIXES)]
    expected = {"step", *(f"{slot}.{key}" for slot in slots for key in params)}
    for name in NAMES:
        for steps in (0, 2):  # before the first step too: torch creates its slots lazily, the others up front
            weights, state = runs(name, recipe)[steps]
            assert set(state) == expected, name
            assert int(state["step"]) == steps
            for key in params:
                assert all(state[f"{slot}.{key}"].shape == weights[key].shape for slot in slots), key
            if steps == 0:
                assert not any(np.any(v) for k, v in state.items() if k != "step"), name


# each framework's export continued by another's import, each export and each import once
CYCLE = [("torch", "tf"), ("tf", "jax"), ("jax", "torch")]


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("source,target", CYCLE)
def test_a_step_continues_from_another_frameworks_state(runs, recipe, source, target):
    """Two steps in ``source``, the third in ``target`` from its export: as ``source``'s own third step."""
    (_, continued) = trained(target, RECIPES[recipe], 1, start=runs(source, recipe)[2])
    assert distance(continued, runs(source, recipe)[3]) <= BOUND


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_state_is_caught(runs, name):
    """The check can fail: the step count one behind (warm-up's learning rate), or Adam's two moments swapped."""
    weights, state = runs(name, "adam")[2]
    (_, behind) = trained(name, RECIPES["adam"], 1, start=(weights, {**state, "step": state["step"] - 1}))
    assert distance(behind, runs(name, "adam")[3]) > 1e3 * BOUND
    swapped = {**state, **{k.replace("exp_avg_sq.", "exp_avg."): v for k, v in state.items() if k.startswith("exp_avg_sq.")},
               **{k.replace("exp_avg.", "exp_avg_sq."): v for k, v in state.items() if k.startswith("exp_avg.")}}
    (_, moved) = trained(name, RECIPES["adam"], 1, start=(weights, swapped))
    assert distance(moved, runs(name, "adam")[3]) > 1e3 * BOUND
