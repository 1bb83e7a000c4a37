"""Data parallel in Keras 3 on TensorFlow: ``tf.distribute.MirroredStrategy`` over N devices of one process,
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers (hosts).

Keras's optimizer *sums* the replicas' gradients (one all-reduce inside ``apply_gradients``), so each
replica differentiates its mean loss divided by N and adds 1/N of the L2 term. BN statistics: Keras's
``synchronized=True`` with ``sync_bn`` (sum, sum of squares and count all-reduced); otherwise each replica
normalises its shard and updates its own copy of the moving statistics (Keras creates them with
aggregation NONE): a cross-replica read, as every export and save is, returns replica 0's.
"""

from __future__ import annotations

import os
from typing import ContextManager, Mapping

import keras
import numpy as np
import tensorflow as tf

from shared.errors import ResNetParityError
from shared.parallel import TIMEOUT_S, shard
from shared.recipe import Recipe
from shared.spec import ResNetSpec, get_spec
from shared.weights import BN_STAT_SUFFIXES, canonical_layers, mapped_variables, resolve, to_canonical, widened

from . import train
from .resnet import ResNet, build_model
from .weights import PARAMS, export_weights, import_weights, inputs, numerics


def _replica_step(model: ResNet, optimizer: keras.optimizers.Optimizer, x, y, recipe: Recipe):
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = train._loss(logits, y, recipe) / replicas  # the replicas' sum is the global batch's mean
    variables = model.trainable_variables
    grads = train.with_l2(tape.gradient(loss, variables), variables, recipe.optimizer.weight_decay / replicas)
    optimizer.apply_gradients(zip(grads, variables))  # summed over the replicas: torch's L2, once
    return loss, logits


@tf.function
def _train_step(strategy: tf.distribute.Strategy, model: ResNet, optimizer: keras.optimizers.Optimizer, x, y, recipe: Recipe):
    loss, logits = strategy.run(lambda x, y: _replica_step(model, optimizer, x, y, recipe), args=(x, y))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), strategy.gather(logits, axis=0)


@tf.function
def _gradients(strategy: tf.distribute.Strategy, model: ResNet, x, y, recipe: Recipe):
    def replica_gradients(x, y):
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = train._loss(model(x, training=True), y, recipe) / replicas
        return tape.gradient(loss, model.trainable_variables)

    grads = strategy.run(replica_gradients, args=(x, y))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]


# what TensorFlow's collectives raise when a worker is lost
LOST = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError, tf.errors.AbortedError)


@tf.function
def _barrier(strategy: tf.distribute.Strategy):
    # an all-reduce every worker enters: TensorFlow has no barrier of its own
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1)), axis=None)


class DataParallel:
    BN_RUNNING_VAR = train.BN_RUNNING_VAR
    TRAINING_STATE_FILES = train.TRAINING_STATE_FILES

    def __init__(self, replicas: int, *, sync_bn: bool, device: str = "cpu", rank: int = 0, rendezvous: str | None = None,
                 timeout: float = TIMEOUT_S):
        self.replicas, self.sync_bn = replicas, sync_bn
        if "TF_CONFIG" in os.environ:
            # several hosts: TF_CONFIG's workers, each with its local devices (its GPUs, or one CPU)
            # a collective waiting longer than the timeout for a worker fails (TensorFlow's default: for ever)
            options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
            self.is_writer = self.strategy.cluster_resolver.task_id == 0
        else:
            if device == "cpu":
                # N logical devices on the one CPU: possible only before TensorFlow first runs
                cpu = tf.config.list_physical_devices("CPU")[0]
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
            found = tf.config.list_logical_devices(device.upper())
            if len(found) < replicas:
                raise ResNetParityError(f"devices={replicas}: TensorFlow sees {len(found)} {device.upper()}s here")
            self.strategy = tf.distribute.MirroredStrategy([d.name for d in found[:replicas]])
            self.is_writer = True
        if self.strategy.num_replicas_in_sync != replicas:
            raise ResNetParityError(f"devices={replicas}: TF_CONFIG's workers hold {self.strategy.num_replicas_in_sync} "
                                    "replicas (one CPU each, or their GPUs)")

    def numerics(self, dtype: str, device: str = "cpu") -> ContextManager[dict[str, str]]:
        return numerics(dtype, device)

    def build_model(self, spec_or_name: ResNetSpec | str, *, seed: int = 0, dtype: str = "float32") -> ResNet:
        """The model with MirroredVariables: one copy per replica, kept equal by the optimizer's updates."""
        spec = get_spec(spec_or_name)
        with self.strategy.scope():
            model = build_model(spec, seed=seed, dtype=dtype)
        for layer in canonical_layers(spec):
            if layer.kind == "bn":
                resolve(model, layer.path).synchronized = self.sync_bn  # read when the step is traced
        return model

    def import_weights(self, model: ResNet, weights: Mapping[str, np.ndarray]) -> None:
        import_weights(model, weights)  # a cross-replica assign writes every copy

    def export_weights(self, model: ResNet) -> dict[str, np.ndarray]:
        return export_weights(model)

    def make_optimizer(self, model: ResNet, recipe: Recipe, total_steps: int) -> keras.optimizers.Optimizer:
        with self.strategy.scope():  # its slots mirrored like the model's variables
            return train.make_optimizer(model, recipe, total_steps)

    def train_step(self, model: ResNet, optimizer: keras.optimizers.Optimizer, x: np.ndarray, y: np.ndarray,
                   recipe: Recipe) -> tuple[float, np.ndarray]:
        """One step on the global batch, each replica its contiguous shard; the global loss and logits."""
        loss, logits = _train_step(self.strategy, model, optimizer, *self._shards(model, x, y), recipe)
        return float(loss), widened(logits.numpy())

    def gradients(self, model: ResNet, x: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict[str, np.ndarray]:
        """The global batch's loss gradient as the optimizer sums it, canonical names and layouts (no weight decay)."""
        grads = _gradients(self.strategy, model, *self._shards(model, x, y), recipe)
        by_variable = {id(v): g for v, g in zip(model.trainable_variables, grads)}
        return {key: to_canonical(by_variable[id(var)].numpy(), perm)
                for key, var, perm in mapped_variables(model.spec, model, PARAMS) if not key.endswith(BN_STAT_SUFFIXES)}

    def predict(self, model: ResNet, x: np.ndarray, batch_size: int) -> np.ndarray:
        return train.predict(model, x, batch_size)  # outside strategy.run: replica 0's variables

    def save_training_state(self, directory: str, model: ResNet, optimizer: keras.optimizers.Optimizer) -> None:
        train.save_training_state(directory, model, optimizer)

    def load_training_state(self, directory: str, model: ResNet, optimizer: keras.optimizers.Optimizer) -> None:
        train.load_training_state(directory, model, optimizer)

    def barrier(self) -> None:
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):  # one process needs none
            _barrier(self.strategy)

    def close(self) -> None:
        self.barrier()  # a worker leaving first makes the others report it unhealthy

    def lost(self, exc: BaseException) -> str | None:
        # a collective aborted because a worker's connection broke or the coordination service missed its heartbeats
        if isinstance(exc, LOST) and isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            lines = [line.strip() for line in exc.message.splitlines() if line.strip()]
            return next((line for line in lines if line.startswith("Collective ops is aborted by")), lines[0])
        return None

    def _shards(self, model: ResNet, x: np.ndarray, y: np.ndarray):
        """Replica r's contiguous rows of the global batch (the replica ids are global across workers)."""
        def part(a: np.ndarray, convert):
            return self.strategy.experimental_distribute_values_from_function(
                lambda ctx: convert(shard(a, ctx.replica_id_in_sync_group, self.replicas)))

        return part(x, lambda a: inputs(model, a)), part(y, lambda a: tf.constant(np.asarray(a), tf.int64))
