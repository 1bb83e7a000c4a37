"""The training step in Flax NNX with optax: ``nnx.value_and_grad`` and ``nnx.Optimizer`` under ``nnx.jit``.

optax already computes the recipe's (torch's) updates: ``optax.sgd`` keeps the buffer ``v = m * v + g``
and ``optax.adam`` adds eps after the bias correction. torch's L2 ``weight_decay`` is
``optax.add_decayed_weights`` chained *before* the optimizer (after it, it would be decoupled).
BatchNorm keeps the *biased* batch variance in ``var``. Transforms and mode switches run in NNX's tree mode
(``graph=False``): the ResNet shares no modules, so no call walks the module graph (3-4 ms a call at resnet20).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from shared.recipe import OPTIMIZER_SLOTS, SGD, Convention, Recipe, learning_rates
from shared.weights import BN_STAT_SUFFIXES, canonical_layers, from_canonical, resolve, to_canonical, widened

from .resnet import ResNet
from .weights import PARAMS, export_weights, import_weights, inputs

BN_RUNNING_VAR: Convention = "biased"
TRAINING_STATE_FILES = ("model.msgpack", "optimizer.msgpack")


def make_optimizer(model: ResNet, recipe: Recipe, total_steps: int) -> nnx.Optimizer:
    """``recipe``'s optimizer with its schedule over ``total_steps`` steps, for the model's parameters."""
    opt = recipe.optimizer
    rates = jnp.asarray(learning_rates(recipe, total_steps), dtype=model.policy.param_dtype)

    def schedule(count: jax.Array) -> jax.Array:
        return rates[jnp.minimum(count, len(rates) - 1)]

    if isinstance(opt, SGD):
        tx = optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)
    else:
        tx = optax.adam(schedule, b1=opt.beta1, b2=opt.beta2, eps=opt.eps)
    if opt.weight_decay:
        # torch's L2: wd * p joins the gradient before the momentum or Adam moments see it
        tx = optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _loss(model: ResNet, x: jax.Array, y: jax.Array, label_smoothing: float) -> tuple[jax.Array, jax.Array]:
    # mixed precision's float16/bfloat16 logits: the loss in float32
    logits = model(x)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean(), logits


@partial(nnx.jit, static_argnames="label_smoothing", graph=False)
def _train_step(model: ResNet, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, label_smoothing: float):
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y, label_smoothing)
    optimizer.update(model, grads)
    return loss, logits


def train_step(model: ResNet, optimizer: nnx.Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[float, np.ndarray]:
    """One optimizer step on an NHWC batch; returns the loss and the train-mode logits (before the step)."""
    model.train(graph=False)
    loss, logits = _train_step(model, optimizer, inputs(model, x), jnp.asarray(np.asarray(y)), recipe.label_smoothing)
    return float(loss), np.asarray(logits)


def gradients(model: ResNet, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
    """The loss gradient of every parameter in train mode, canonical names and layouts (no weight decay)."""
    model.train(graph=False)
    grads = nnx.grad(lambda m: _loss(m, inputs(model, x), jnp.asarray(np.asarray(y)), recipe.label_smoothing)[0])(model)
    # a model whose parameters hold the gradients: the weight adapter then gives canonical names and layouts
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    exported = export_weights(nnx.merge(graphdef, grads, rest))
    return {k: v for k, v in exported.items() if not k.endswith(BN_STAT_SUFFIXES)}


@nnx.jit(graph=False)
def _update(model: ResNet, optimizer: nnx.Optimizer, grads: nnx.State) -> None:
    optimizer.update(model, grads)


def apply_gradients(model: ResNet, optimizer: nnx.Optimizer, grads: Mapping[str, np.ndarray], recipe: Recipe) -> None:
    """One optimizer step with the given loss gradients (canonical names and layouts); L2 is in the optax chain."""
    holder = nnx.clone(model)  # a model whose parameters hold the gradients: the weight adapter takes canonical names
    import_weights(holder, {**export_weights(model), **grads})
    _update(model, optimizer, nnx.state(holder, nnx.Param))


@nnx.jit(graph=False)
def _forward(model: ResNet, x: jax.Array) -> jax.Array:
    return model(x)


def predict(model: ResNet, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits for an NHWC array, computed batch by batch."""
    model.eval(graph=False)
    return np.concatenate([widened(np.asarray(_forward(model, inputs(model, x[i : i + batch_size])))) for i in range(0, len(x), batch_size)])


# optax's names for torch's slots (optax.trace's buffer, optax.scale_by_adam's moments)
_OPTAX_SLOTS = dict(zip(("trace", "mu", "nu"), (*OPTIMIZER_SLOTS["sgd"], *OPTIMIZER_SLOTS["adam"])))


def _optax_states(optimizer: nnx.Optimizer) -> list:
    """The optax states of the chain (named tuples: TraceState, ScaleByAdamState, ScaleByScheduleState, ...)."""
    return jax.tree.leaves(optimizer.opt_state, is_leaf=lambda node: hasattr(node, "_fields"))


def _slot_variables(model: ResNet, optimizer: nnx.Optimizer):
    """(canonical key, permutation, {slot: the optimizer's variable}) of every parameter."""
    slots = {_OPTAX_SLOTS[f]: getattr(s, f) for s in _optax_states(optimizer) for f in s._fields if f in _OPTAX_SLOTS}
    for layer in canonical_layers(model.spec):
        for param in layer.shapes:
            key = f"{layer.path}.{param}"
            if not key.endswith(BN_STAT_SUFFIXES):
                attr, perm = PARAMS[layer.kind][param]
                yield key, perm, {slot: resolve(tree, layer.path)[attr] for slot, tree in slots.items()}


def export_optimizer_state(model: ResNet, optimizer: nnx.Optimizer) -> dict[str, np.ndarray]:
    """``step`` and torch's slots per parameter (optax's trace, mu and nu), canonical names and layouts."""
    state = {"step": np.array(int(optimizer.step[...]), np.int64)}
    for key, perm, held in _slot_variables(model, optimizer):
        state.update({f"{slot}.{key}": to_canonical(np.asarray(var[...]), perm) for slot, var in held.items()})
    return state


def import_optimizer_state(model: ResNet, optimizer: nnx.Optimizer, state: Mapping[str, np.ndarray]) -> None:
    """Continue from ``state``: the slots, and every step count of the chain (the schedule's, Adam's, the optimizer's)."""
    for key, perm, held in _slot_variables(model, optimizer):
        for slot, var in held.items():
            var.value = jnp.asarray(np.ascontiguousarray(from_canonical(np.asarray(state[f"{slot}.{key}"]), perm)),
                                    dtype=var.dtype)
    step = int(state["step"])
    for s in _optax_states(optimizer):
        if "count" in s._fields:
            s.count.value = jnp.asarray(step, dtype=s.count.dtype)
    optimizer.step.value = jnp.asarray(step, dtype=optimizer.step.dtype)


def _save(path: str, node: nnx.Object) -> None:
    with open(path, "wb") as fh:
        fh.write(serialization.msgpack_serialize(nnx.state(node).to_pure_dict()))


def _load(path: str, node: nnx.Object) -> None:
    with open(path, "rb") as fh:
        saved = serialization.msgpack_restore(fh.read())
    state = nnx.state(node)
    nnx.replace_by_pure_dict(state, saved)  # raises on a key the node lacks
    nnx.update(node, state)


def save_training_state(directory: str, model: ResNet, optimizer: nnx.Optimizer) -> None:
    """The native checkpoint: ``nnx.state`` of the model and of the optimizer, msgpack-serialised."""
    _save(os.path.join(directory, "model.msgpack"), model)
    _save(os.path.join(directory, "optimizer.msgpack"), optimizer)


def load_training_state(directory: str, model: ResNet, optimizer: nnx.Optimizer) -> None:
    """Restore what ``save_training_state`` wrote."""
    _load(os.path.join(directory, "model.msgpack"), model)
    _load(os.path.join(directory, "optimizer.msgpack"), optimizer)
