"""The training step in Keras 3 on TensorFlow: ``tf.GradientTape`` inside ``tf.function``, a Keras optimizer.

Where Keras's optimizers differ from the recipe (torch's definitions), the mapping says how:

- ``keras.optimizers.SGD`` keeps ``v = m * v - lr * g; p += v``. That equals torch's ``v = m * v + g;
  p -= lr * v`` only while lr is constant (the Keras velocity is ``-lr`` times torch's), so a warm-up
  or decay changes the trajectory. ``TorchSGD`` overrides ``update_step`` with torch's buffer.
- ``keras.optimizers.Adam`` adds ``epsilon`` before the bias correction (``sqrt(v) + eps`` scaled by
  ``sqrt(1 - b2^t)``); torch and optax add it after. ``TorchAdam`` overrides ``update_step``.
- Keras's ``weight_decay=`` is decoupled (``p -= lr * wd * p`` beside the update). The recipe's
  L2 is torch's, added to the gradient, so ``train_step`` adds ``wd * p`` itself and the optimizers
  are built without ``weight_decay``.

tests/test_training_parity.py shows each of the three stock behaviours missing torch's numbers.
BatchNorm keeps the *biased* batch variance in ``moving_variance``.
"""

from __future__ import annotations

import os
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from shared.errors import CheckpointError
from shared.recipe import OPTIMIZER_SLOTS, SGD, Convention, Recipe, learning_rates
from shared.weights import BN_STAT_SUFFIXES, from_canonical, mapped_variables, to_canonical, widened

from .resnet import ResNet
from .weights import PARAMS, inputs

BN_RUNNING_VAR: Convention = "biased"
TRAINING_STATE_FILES = ("model.weights.h5", "optimizer.npz")


class LearningRateTable(keras.optimizers.schedules.LearningRateSchedule):
    """The recipe's learning rate per step, precomputed in float64 and looked up by the step count."""

    def __init__(self, rates: np.ndarray, dtype: str):
        # in the model's dtype: a float32 lr variable would round torch's float64 lr for float64 models
        self.rates = np.asarray(rates, dtype=dtype)

    def __call__(self, step):
        return ops.take(self.rates, ops.minimum(step, len(self.rates) - 1))

    def get_config(self) -> dict:
        return {"rates": self.rates.tolist(), "dtype": str(self.rates.dtype)}


def _constant(value: float, dtype):
    # straight to the variable's dtype: ops.cast would round a Python float through float32 first
    return ops.convert_to_tensor(value, dtype=dtype)


class TorchSGD(keras.optimizers.SGD):
    """keras SGD with torch's momentum buffer: ``v = m * v + g; p -= lr * v`` (Nesterov: ``lr * (g + m * v)``)."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.momentum != 0:
            v = self.momentums[self._get_variable_index(variable)]
            m = _constant(self.momentum, variable.dtype)
            self.assign(v, ops.add(ops.multiply(v, m), g))
            g = ops.add(g, ops.multiply(v, m)) if self.nesterov else v
        self.assign_sub(variable, ops.multiply(g, lr))


class TorchAdam(keras.optimizers.Adam):
    """keras Adam with eps after the bias correction, as torch: ``lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        t = ops.cast(self.iterations + 1, variable.dtype)
        bc1 = 1 - ops.power(_constant(self.beta_1, variable.dtype), t)
        bc2 = 1 - ops.power(_constant(self.beta_2, variable.dtype), t)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(g, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(g), v), 1 - self.beta_2))
        denom = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(bc2)), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(m, lr / bc1), denom))


def make_optimizer(model: ResNet, recipe: Recipe, total_steps: int) -> keras.optimizers.Optimizer:
    """``recipe``'s optimizer with its schedule over ``total_steps`` steps, built for the model's variables."""
    opt = recipe.optimizer
    lr = LearningRateTable(learning_rates(recipe, total_steps), model.dtype_policy.variable_dtype)
    if isinstance(opt, SGD):
        optimizer = TorchSGD(learning_rate=lr, momentum=opt.momentum, nesterov=opt.nesterov)
    else:
        optimizer = TorchAdam(learning_rate=lr, beta_1=opt.beta1, beta_2=opt.beta2, epsilon=opt.eps)
    optimizer.build(model.trainable_variables)  # the slots must exist before load_checkpoint fills them
    return optimizer


def _loss(logits, y, recipe: Recipe):
    # mixed precision's float16/bfloat16 logits: the loss in float32, as the Keras mixed-precision guide does
    logits = ops.cast(logits, keras.backend.result_type(logits.dtype, "float32"))
    targets = ops.one_hot(y, ops.shape(logits)[-1], dtype=logits.dtype)
    return ops.mean(keras.losses.categorical_crossentropy(targets, logits, from_logits=True, label_smoothing=recipe.label_smoothing))


def with_l2(grads: list, variables: list, weight_decay: float) -> list:
    """torch's L2, added to the gradient (Keras's own weight_decay would be decoupled)."""
    return [g + weight_decay * v for g, v in zip(grads, variables)] if weight_decay else grads


@tf.function
def _train_step(model: ResNet, optimizer: keras.optimizers.Optimizer, x, y, recipe: Recipe):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = _loss(logits, y, recipe)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(with_l2(tape.gradient(loss, variables), variables, recipe.optimizer.weight_decay), variables))
    return loss, logits


def train_step(model: ResNet, optimizer: keras.optimizers.Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[float, np.ndarray]:
    """One optimizer step on an NHWC batch; returns the loss and the train-mode logits (before the step)."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables)  # outside tf.function, which creates variables only on its first trace
    loss, logits = _train_step(model, optimizer, inputs(model, x), tf.constant(np.asarray(y), tf.int64), recipe)
    return float(loss), widened(logits.numpy())


def gradients(model: ResNet, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
    """The loss gradient of every parameter in train mode, canonical names and layouts (no weight decay)."""
    mapped = [(k, var, perm) for k, var, perm in mapped_variables(model.spec, model, PARAMS) if not k.endswith(BN_STAT_SUFFIXES)]
    with tf.GradientTape() as tape:
        loss = _loss(model(inputs(model, x), training=True), tf.constant(np.asarray(y), tf.int64), recipe)
    grads = tape.gradient(loss, [var for _, var, _ in mapped])
    return {key: to_canonical(g.numpy(), perm) for (key, _, perm), g in zip(mapped, grads)}


def apply_gradients(model: ResNet, optimizer: keras.optimizers.Optimizer, grads: Mapping[str, np.ndarray], recipe: Recipe) -> None:
    """One optimizer step with the given loss gradients (canonical names and layouts), torch's L2 added."""
    by_variable = {id(var): from_canonical(np.asarray(grads[key]), perm) for key, var, perm in mapped_variables(model.spec, model, PARAMS)
                   if not key.endswith(BN_STAT_SUFFIXES)}
    variables = model.trainable_variables
    given = [tf.constant(by_variable[id(v)], v.dtype) for v in variables]
    optimizer.apply_gradients(zip(with_l2(given, variables, recipe.optimizer.weight_decay), variables))


@tf.function
def _forward(model: ResNet, x):
    return model(x, training=False)


def predict(model: ResNet, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits for an NHWC array, computed batch by batch."""
    return np.concatenate([widened(_forward(model, inputs(model, x[i : i + batch_size])).numpy()) for i in range(0, len(x), batch_size)])


def _slots(optimizer: keras.optimizers.Optimizer) -> dict[str, list]:
    """Each of torch's slot names and the optimizer's list of that slot's variables (one per trainable variable)."""
    if isinstance(optimizer, keras.optimizers.Adam):
        return dict(zip(OPTIMIZER_SLOTS["adam"], (optimizer._momentums, optimizer._velocities)))
    return dict(zip(OPTIMIZER_SLOTS["sgd"], (optimizer.momentums,))) if optimizer.momentum else {}


def _slot_variables(model: ResNet, optimizer: keras.optimizers.Optimizer):
    """(canonical key, permutation, {slot: the optimizer's variable}) of every trainable parameter."""
    slots = _slots(optimizer)
    for key, var, perm in mapped_variables(model.spec, model, PARAMS):
        if not key.endswith(BN_STAT_SUFFIXES):
            index = optimizer._get_variable_index(var)
            yield key, perm, {slot: held[index] for slot, held in slots.items()}


def export_optimizer_state(model: ResNet, optimizer: keras.optimizers.Optimizer) -> dict[str, np.ndarray]:
    """``step`` (the optimizer's iterations) and torch's slots per parameter, canonical names and layouts."""
    state = {"step": np.array(int(optimizer.iterations.numpy()), np.int64)}
    for key, perm, held in _slot_variables(model, optimizer):
        state.update({f"{slot}.{key}": to_canonical(var.numpy(), perm) for slot, var in held.items()})
    return state


def import_optimizer_state(model: ResNet, optimizer: keras.optimizers.Optimizer, state: Mapping[str, np.ndarray]) -> None:
    """Continue from ``state``: the slots and the iteration count (which the learning-rate table reads)."""
    for key, perm, held in _slot_variables(model, optimizer):
        for slot, var in held.items():
            var.assign(from_canonical(np.asarray(state[f"{slot}.{key}"]), perm).astype(var.dtype))
    optimizer.iterations.assign(int(state["step"]))


def save_training_state(directory: str, model: ResNet, optimizer: keras.optimizers.Optimizer) -> None:
    """The native checkpoint: Keras .weights.h5 for the model, the optimizer's own variables as .npz."""
    model.save_weights(os.path.join(directory, "model.weights.h5"))
    store: dict[str, np.ndarray] = {}
    optimizer.save_own_variables(store)
    np.savez(os.path.join(directory, "optimizer.npz"), **store)


def load_training_state(directory: str, model: ResNet, optimizer: keras.optimizers.Optimizer) -> None:
    """Restore what ``save_training_state`` wrote, strictly."""
    model.load_weights(os.path.join(directory, "model.weights.h5"))
    with np.load(os.path.join(directory, "optimizer.npz")) as saved:
        store = {k: saved[k] for k in saved.files}
    if len(store) != len(optimizer.variables):
        # Keras would only warn and skip: a silent fresh optimizer is not a resume
        raise CheckpointError(f"{directory}: optimizer.npz holds {len(store)} variables, the optimizer has {len(optimizer.variables)}")
    optimizer.load_own_variables(store)
