"""Data parallel in Flax NNX: a one-axis device mesh, the batch sharded ``P("data")``, everything else replicated.

No collective is written by hand: under ``nnx.jit`` XLA partitions the step over the mesh and inserts
the all-reduces. With ``sync_bn`` the project's own step runs unchanged: BatchNorm's mean over the batch
axis is over the *global* batch, and the global mean loss gives averaged gradients. Per-replica BN: the
batch is reshaped to (replicas, shard, ...) and ``jax.vmap`` runs one model copy per replica (each its own
statistics), the loss is the mean of the replicas' losses; the running statistics come out stacked per
replica and the step keeps replica 0's (the rule of DDP and Keras's MirroredStrategy). Several hosts:
``jax.distributed.initialize`` from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import ContextManager, Mapping

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shared.errors import ResNetParityError, one_line
from shared.parallel import TIMEOUT_S
from shared.recipe import Recipe
from shared.spec import ResNetSpec
from shared.weights import BN_STAT_SUFFIXES, widened

from . import train
from .resnet import ResNet, build_model
from .weights import export_weights, import_weights, numerics


def _replica_losses(model: ResNet, params: nnx.State, x: jax.Array, y: jax.Array, label_smoothing: float):
    """Each replica's mean loss on its shard (x: replicas x shard x H x W x C), from its own copy of the model."""
    graphdef, _, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)

    def one(x, y):
        copy = nnx.merge(graphdef, params, stats, rest, copy=True)  # BN updates this replica's copy only
        loss, logits = train._loss(copy, x, y, label_smoothing)
        return loss, (logits, nnx.state(copy, nnx.BatchStat))

    return jax.vmap(one)(x, y)


@partial(nnx.jit, static_argnames="label_smoothing", graph=False)  # tree mode, as in jax_impl.train
def _per_replica_step(model: ResNet, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array, label_smoothing: float):
    def loss(params):
        losses, (logits, stats) = _replica_losses(model, params, x, y, label_smoothing)
        return losses.mean(), (logits, stats)  # equal shards: the global batch's mean loss

    (value, (logits, stats)), grads = jax.value_and_grad(loss, has_aux=True)(nnx.state(model, nnx.Param))
    optimizer.update(model, grads)
    nnx.update(model, jax.tree.map(lambda s: s[0], stats))  # replica 0's running statistics
    return value, logits.reshape(-1, logits.shape[-1])


@partial(nnx.jit, static_argnames="label_smoothing", graph=False)  # tree mode, as in jax_impl.train
def _per_replica_gradients(model: ResNet, x: jax.Array, y: jax.Array, label_smoothing: float) -> nnx.State:
    return jax.grad(lambda params: _replica_losses(model, params, x, y, label_smoothing)[0].mean())(
        nnx.state(model, nnx.Param))


@partial(nnx.jit, static_argnames="label_smoothing", graph=False)  # tree mode, as in jax_impl.train
def _gradients(model: ResNet, x: jax.Array, y: jax.Array, label_smoothing: float) -> nnx.State:
    return nnx.grad(lambda m: train._loss(m, x, y, label_smoothing)[0])(model)


def _distributed_environment(timeout: float) -> int:
    """Join a multi-host run when its variables are set (``shared.parallel`` checked them); the process count.
    ``timeout`` bounds joining and, as the heartbeat timeout, how long a silent process counts as alive."""
    if "JAX_COORDINATOR_ADDRESS" not in os.environ:
        return 1
    processes = int(os.environ["JAX_NUM_PROCESSES"])
    jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=processes,
                               process_id=int(os.environ["JAX_PROCESS_ID"]), initialization_timeout=int(timeout),
                               heartbeat_timeout_seconds=int(timeout))
    return processes


class DataParallel:
    BN_RUNNING_VAR = train.BN_RUNNING_VAR
    TRAINING_STATE_FILES = train.TRAINING_STATE_FILES

    def __init__(self, replicas: int, *, sync_bn: bool, device: str = "cpu", rank: int = 0, rendezvous: str | None = None,
                 timeout: float = TIMEOUT_S):
        self.replicas, self.sync_bn = replicas, sync_bn
        processes = _distributed_environment(timeout)
        if device == "cpu":
            # N devices on the one CPU: possible only before JAX first runs (this is a fresh process)
            jax.config.update("jax_num_cpu_devices", replicas // processes)
        found = jax.devices(device)
        if len(found) < replicas:
            raise ResNetParityError(f"devices={replicas}: JAX sees {len(found)} {device.upper()} devices here")
        self.mesh = Mesh(np.array(found[:replicas]), ("data",))
        self.replicated, self.batch_sharded = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P("data"))
        self.is_writer = jax.process_index() == 0

    def numerics(self, dtype: str, device: str = "cpu") -> ContextManager[dict[str, str]]:
        return numerics(dtype, device)

    def build_model(self, spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
        model = build_model(spec_or_name, seed=seed, dtype=dtype)
        self._replicate(model)
        return model

    def import_weights(self, model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
        import_weights(model, weights)
        self._replicate(model)

    def export_weights(self, model: ResNet) -> dict[str, np.ndarray]:
        return export_weights(model)

    def make_optimizer(self, model: ResNet, recipe: Recipe, total_steps: int) -> nnx.Optimizer:
        optimizer = train.make_optimizer(model, recipe, total_steps)
        self._replicate(optimizer)
        return optimizer

    def train_step(self, model: ResNet, optimizer: nnx.Optimizer, x: np.ndarray, y: np.ndarray, recipe: Recipe
                   ) -> tuple[float, np.ndarray]:
        """One step on the global batch, each device its contiguous shard; the global loss and logits."""
        model.train(graph=False)
        if self.sync_bn:
            loss, logits = train._train_step(model, optimizer, *self._batch(model, x, y), recipe.label_smoothing)
        else:
            loss, logits = _per_replica_step(model, optimizer, *self._batch(model, x, y), recipe.label_smoothing)
        # every process holds the rows of its own devices: the whole batch's logits are gathered from all of them
        return float(loss), widened(multihost_utils.process_allgather(logits, tiled=True))

    def gradients(self, model: ResNet, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
        """The global batch's loss gradient on the mesh, canonical names and layouts (no weight decay)."""
        model.train(graph=False)
        if self.sync_bn:
            grads = _gradients(model, *self._batch(model, x, y), recipe.label_smoothing)
        else:
            grads = _per_replica_gradients(model, *self._batch(model, x, y), recipe.label_smoothing)
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        exported = export_weights(nnx.merge(graphdef, grads, rest))
        return {k: v for k, v in exported.items() if not k.endswith(BN_STAT_SUFFIXES)}

    def predict(self, model: ResNet, x: np.ndarray, batch_size: int) -> np.ndarray:
        return train.predict(model, x, batch_size)

    def save_training_state(self, directory: str, model: ResNet, optimizer: nnx.Optimizer) -> None:
        train.save_training_state(directory, model, optimizer)

    def load_training_state(self, directory: str, model: ResNet, optimizer: nnx.Optimizer) -> None:
        train.load_training_state(directory, model, optimizer)
        self._replicate(model)
        self._replicate(optimizer)

    def barrier(self) -> None:
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("resnet-parity")

    def close(self) -> None:
        self.barrier()
        # leave the coordination service together now: at exit each process would wait for the others in its
        # shutdown barrier, and process 0 may have more to do alone (compare's one-device reference)
        jax.distributed.shutdown()

    def lost(self, exc: BaseException) -> str | None:
        # a collective whose peer died fails in the runtime (gloo's "Connection reset by peer" on CPU)
        if isinstance(exc, jax.errors.JaxRuntimeError) and jax.process_count() > 1:
            return one_line(exc)
        return None

    def _replicate(self, node: nnx.Object) -> None:
        """Every array of the model or the optimizer on every device of the mesh."""
        nnx.update(node, jax.device_put(nnx.state(node), self.replicated))

    def _batch(self, model: ResNet, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The global batch split over the mesh, replica r its contiguous rows; (replicas, shard, ...) per replica."""
        x, y = np.asarray(x).astype(model.policy.param_dtype), np.asarray(y)
        if not self.sync_bn:
            x, y = x.reshape(self.replicas, -1, *x.shape[1:]), y.reshape(self.replicas, -1)
        # each process fills the shards of its own devices from the global batch (all processes hold it)
        return tuple(jax.make_array_from_callback(a.shape, self.batch_sharded, lambda index, a=a: a[index]) for a in (x, y))
