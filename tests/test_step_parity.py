"""Training parity one step at a time (``shared.parity.steps``): every step from the float64 truth's state."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from shared import frameworks
from shared.parity import FrameworkResult, TensorCheck
from shared.recipe import SGD, Recipe, Schedule, learning_rates
from shared.spec import get_spec
from shared.parity.steps import facts, states, steps_alone, trajectory_notes
from shared.parity.training import random_batches, train_parity
from shared.weights import randomize, relative_error

SPEC = get_spec("resnet20")
WARMUP = Recipe("warmup", "resnet20", "random", SGD(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-2),
                label_smoothing=0.1, schedule=Schedule("cosine", warmup_steps=2))


@pytest.mark.parametrize("name", ["torch", "tf", "jax"])
def test_a_step_taken_alone_from_the_truths_state_is_the_truths_next_step(name):
    """In float64 each step from the truth's state (weights, BN statistics, optimizer state) lands on its next state."""
    batches = random_batches(SPEC, 3, 4, 16, 1, "float64")
    truth = list(states("torch", SPEC, randomize(SPEC, 0, np.float64), batches, WARMUP, dtype="float64"))
    alone = steps_alone(name, SPEC, truth[1:-1], batches[1:], WARMUP, total_steps=3, dtype="float64")
    convention = frameworks.load_trainer(name).BN_RUNNING_VAR
    for (start, _), (weights, state), (true_weights, true_state) in zip(truth[1:], alone, truth[2:]):
        assert int(state["step"]) == int(true_state["step"])
        got = facts([(weights, state)], [(start, {})], SPEC, 4, 16, 1, convention, "unbiased")  # torch's convention
        true = facts([(true_weights, true_state)], [(start, {})], SPEC, 4, 16, 1, "unbiased", "unbiased")
        assert got.keys() == true.keys()
        assert max(relative_error(got[k], true[k]) for k in true) < 1e-12


def test_a_mistake_in_a_later_step_fails_when_taken_alone(monkeypatch):
    """Stock Keras SGD keeps v = m * v - lr * g: equal to torch's buffer only while lr is constant. Under warm-up its
    first step is right, so only the later steps show it, and they decide even though the trajectory is not shown."""
    from tensorflow_impl import train as keras_train

    def stock(model, recipe, total):
        opt = recipe.optimizer
        rates = keras_train.LearningRateTable(learning_rates(recipe, total), model.dtype_policy.variable_dtype)
        optimizer = keras.optimizers.SGD(learning_rate=rates, momentum=opt.momentum, nesterov=opt.nesterov)
        optimizer.build(model.trainable_variables)
        return optimizer

    monkeypatch.setattr(keras_train, "make_optimizer", stock)
    report = train_parity("resnet20", 3, recipe=WARMUP, targets=["torch", "tf"], batch=4, size=16)
    keras_result = report.results[1]
    assert not keras_result.passed and keras_result.first_divergence.startswith("alone@2 ")
    assert all(c.passed for c in keras_result.checks if c.name.split(" ")[0].endswith("@1") or c.name == "logits@1")


def test_the_trajectory_after_step_one_is_shown_not_binding():
    """A framework over its limit only on its own trajectory after step 1 passes, with a note saying why."""
    checks = [TensorCheck("params@1 fc.bias", 1e-7, 1e-7, 1e-6, 0.0),
              TensorCheck("params@5 fc.bias", 1e-3, 1e-7, 1e-6, 1e-3, binding=False),
              TensorCheck("alone@5 fc.bias", 1e-7, 1e-7, 1e-6, 0.0)]
    result = FrameworkResult("tf", False, 1, 1, True, checks)
    assert result.passed and result.first_divergence is None
    (note,) = trajectory_notes([result])
    assert note.startswith("Keras/TF: params@5 fc.bias beyond the limit on its own trajectory")
    failing = FrameworkResult("tf", False, 1, 1, True, [*checks[:2], TensorCheck("alone@5 fc.bias", 1e-3, 1e-7, 1e-6, 0)])
    assert not failing.passed and failing.first_divergence == "alone@5 fc.bias" and not trajectory_notes([failing])
