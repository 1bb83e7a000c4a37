"""Data parallel: the distributed step of each framework's own engine against one device, the rules
docs/data_parallel.md states for it, and what it refuses.

The step runs on 2 replicas (2 processes for DDP, 2 logical CPU devices for MirroredStrategy and the JAX mesh),
in fresh processes started by ``shared.parallel``, 3 steps of the parity recipe (SGD with Nesterov momentum, L2
1e-2, label smoothing) in float64 on a narrowed resnet20 (one block per stage, widths 4-8-16) at 8x8, global
batch 8: small enough for 2 cores, deep enough to have BN in the stem, the blocks and a projection-free
shortcut. Reference: PyTorch on one device (cheap, and a second framework, so a check is also across
frameworks), with the whole batch for ``sync_bn`` and with each shard normalised on its own (``PerShard``) for
per-replica BN. Bound: the float64 training bound of ``shared.parity``.

Each rule of docs/data_parallel.md is broken on purpose in each engine, on a real engine, and
must fail that check in the fact it is about: per-replica BN keeps replica 0's running statistics (broken:
the replicas' statistics averaged), gradients are averaged (broken: summed), L2 is counted once (broken:
added on every replica as well), ``--sync-bn`` keeps the global batch's variance, unbiased with the global
count in PyTorch (broken: the shard's count; Keras and Flax: the mean of the shards' variances). One process
per engine runs the correct step in both BN modes and every broken one: 2-4 minutes for the three engines on the
shared 2 cores, most of it XLA compiling Flax's step for each of the six.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import parallel
from shared.cli import main
from shared.parity import PARITY_RECIPE, rule_for
from shared.parity.inputs import starting_weights
from shared.parity.report import fact_of
from shared.parity.training import PerShard, Trace, _trace_replica, check_traces, random_batches, trace_training
from shared.spec import get_spec

SPEC = get_spec("resnet20", layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4)
DEVICES, BATCH, SIZE, STEPS = 2, 8, 8, 3
CHECKPOINTS = (1, STEPS)
RULE = rule_for("float64", "train", None)  # the fixed float64 training bound
NAMES = ["torch", "tf", "jax"]


@pytest.fixture(scope="module")
def problem():
    _, weights, _, _ = starting_weights(SPEC, None, None, "float64", 0)
    batches = random_batches(SPEC, STEPS, BATCH, SIZE, 1, "float64")
    return weights, batches, PARITY_RECIPE.replace(arch=SPEC.name)


# --------------------------------------------------------------------------- deliberate breaks, one per rule and engine
# Each takes the engine in its replica process, breaks one rule for the run that follows and returns the undo.


def _all_reduce_statistics(engine, model) -> None:
    import torch.distributed as dist

    for buffer in model.module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= engine.replicas


def torch_statistics_averaged(engine):
    """After each step the replicas' BN statistics are averaged (a 'sync' of the buffers), not rank 0's kept."""
    step = engine.train_step

    def train_step(model, *args):
        out = step(model, *args)
        _all_reduce_statistics(engine, model)
        return out

    engine.train_step = train_step
    return lambda: delattr(engine, "train_step")


def _with_comm_hook(engine, hook):
    build = engine.build_model

    def build_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_comm_hook(engine, hook)
        return model

    engine.build_model = build_model
    return lambda: delattr(engine, "build_model")


def _summed(engine, bucket):
    """A DDP communication hook that all-reduces (sums) the gradients and forgets to divide by the world size."""
    import torch.distributed as dist

    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def _l2_on_every_replica(engine, bucket):
    """DDP's averaging hook after adding L2 to each replica's gradient: with the optimizer's, counted twice."""
    for grad, param in zip(bucket.gradients(), bucket.parameters()):
        grad.add_(param.detach(), alpha=PARITY_RECIPE.optimizer.weight_decay)
    bucket.buffer().div_(engine.replicas)
    return _summed(engine, bucket)


def torch_gradients_summed(engine):
    return _with_comm_hook(engine, _summed)


def torch_l2_twice(engine):
    return _with_comm_hook(engine, _l2_on_every_replica)


def torch_variance_with_shard_count(engine):
    """SyncBN's running variance unbiased with the shard's count n/N instead of the global n."""
    import torch
    from pytorch_impl.parallel import AllReduceBatchNorm2d

    forward = AllReduceBatchNorm2d.forward

    def shard_count(self, x):
        if not self.training:
            return forward(self, x)
        before = self.running_var.clone()
        out = forward(self, x)
        with torch.no_grad():
            n = x.numel() // x.shape[1]  # this replica's values per channel only
            global_n = n * engine.replicas
            var = (self.running_var - (1 - self.momentum) * before) / self.momentum * (global_n - 1) / global_n
            self.running_var.copy_((1 - self.momentum) * before + self.momentum * var * n / (n - 1))
        return out

    AllReduceBatchNorm2d.forward = shard_count
    return lambda: setattr(AllReduceBatchNorm2d, "forward", forward)


def _tf_replica_step(loss_divided: bool, l2_divided: bool):
    """tensorflow_impl.parallel's replica step with the loss or the L2 term not divided by the replica count,
    under Keras's optimizer, which sums the replicas' gradients."""
    import tensorflow as tf
    from tensorflow_impl import train

    def replica_step(model, optimizer, x, y, recipe):
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = train._loss(logits, y, recipe) / (replicas if loss_divided else 1)
        variables = model.trainable_variables
        decay = recipe.optimizer.weight_decay / (replicas if l2_divided else 1)
        optimizer.apply_gradients(zip(train.with_l2(tape.gradient(loss, variables), variables, decay), variables))
        return loss, logits

    return replica_step


def _tf_patch(module, attribute: str, value):
    saved = getattr(module, attribute)
    setattr(module, attribute, value)  # read when the step is traced: a new model traces again
    return lambda: setattr(module, attribute, saved)


def tf_statistics_averaged(engine):
    """The moving statistics created with aggregation "mean" (tf.keras 2's ON_READ MEAN): the replicas' mean."""
    from tensorflow_impl.resnet import BatchNorm

    add_weight = BatchNorm.add_weight

    def averaged(self, *args, **kwargs):
        if kwargs.get("trainable") is False:
            kwargs["aggregation"] = "mean"
        return add_weight(self, *args, **kwargs)

    BatchNorm.add_weight = averaged
    return lambda: delattr(BatchNorm, "add_weight")


def tf_gradients_summed(engine):
    from tensorflow_impl import parallel as tf_parallel

    return _tf_patch(tf_parallel, "_replica_step", _tf_replica_step(loss_divided=False, l2_divided=True))


def tf_l2_on_every_replica(engine):
    from tensorflow_impl import parallel as tf_parallel

    return _tf_patch(tf_parallel, "_replica_step", _tf_replica_step(loss_divided=True, l2_divided=False))


def tf_mean_of_shard_variances(engine):
    """Synchronised BN whose global variance is the mean of the replicas' variances (the spread of their means lost)."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn

    def moments(x, axes, keepdims):
        ctx = tf.distribute.get_replica_context()
        mean, var = tf.nn.moments(x, axes, keepdims=keepdims)
        return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, mean), ctx.all_reduce(tf.distribute.ReduceOp.MEAN, var)

    return _tf_patch(nn, "_compute_moments_sync", moments)


def _jax_patch(module, attribute: str, value):
    import jax

    saved = getattr(module, attribute)
    setattr(module, attribute, value)
    jax.clear_caches()  # the steps are traced again, with the patch

    def undo():
        setattr(module, attribute, saved)
        jax.clear_caches()

    return undo


def _jax_replica_losses(change):
    from jax_impl import parallel as jax_parallel

    replica_losses = jax_parallel._replica_losses

    def changed(model, params, x, y, label_smoothing):
        losses, (logits, stats) = replica_losses(model, params, x, y, label_smoothing)
        return change(losses, stats, params, logits)

    return _jax_patch(jax_parallel, "_replica_losses", changed)


def jax_statistics_averaged(engine):
    import jax
    import jax.numpy as jnp

    def averaged(losses, stats, params, logits):
        return losses, (logits, jax.tree.map(lambda s: jnp.broadcast_to(s.mean(0), s.shape), stats))

    return _jax_replica_losses(averaged)


def jax_gradients_summed(engine):
    return _jax_replica_losses(lambda losses, stats, params, logits: (losses * len(losses), (logits, stats)))


def jax_l2_on_every_replica(engine):
    """Each replica adds the L2 term to its loss, and optax's chain adds it again."""
    import jax
    import jax.numpy as jnp

    def with_l2(losses, stats, params, logits):
        l2 = sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))
        return losses + 0.5 * PARITY_RECIPE.optimizer.weight_decay * l2, (logits, stats)

    return _jax_replica_losses(with_l2)


def jax_mean_of_shard_variances(engine):
    """BN on the global batch whose variance is the mean of the shards' variances (the spread of their means lost)."""
    from flax.nnx.nn import normalization

    compute_stats = normalization._compute_stats

    def per_shard(x, axes, *args, **kwargs):
        if x.ndim != 4:
            return compute_stats(x, axes, *args, **kwargs)
        shards = x.reshape(engine.replicas, -1, *x.shape[1:])
        return shards.mean((1, 2, 3)).mean(0), shards.var((1, 2, 3)).mean(0)

    return _jax_patch(normalization, "_compute_stats", per_shard)


# rule -> (BN mode it is about, the facts its break must show in, the break in each engine)
RULES = {
    "replica 0's statistics kept": (False, ("running_mean", "running_var"), {
        "torch": torch_statistics_averaged, "tf": tf_statistics_averaged, "jax": jax_statistics_averaged}),
    # Keras's engine computes the gradient fact apart from its step (the break is in the step): the parameters show it
    "gradients averaged": (False, ("gradient", "params"), {
        "torch": torch_gradients_summed, "tf": tf_gradients_summed, "jax": jax_gradients_summed}),
    "L2 counted once": (False, ("params",), {
        "torch": torch_l2_twice, "tf": tf_l2_on_every_replica, "jax": jax_l2_on_every_replica}),
    "global variance under sync-bn": (True, ("running_var",), {
        "torch": torch_variance_with_shard_count, "tf": tf_mean_of_shard_variances, "jax": jax_mean_of_shard_variances}),
}


def _all_variants(engine, name: str, *trace_args) -> dict[str, Trace]:
    """In one replica process: the correct step in both BN modes, then each rule broken in turn."""
    variants = [("per-replica", False, None), ("sync", True, None)]
    variants += [(rule, sync_bn, breaks[name]) for rule, (sync_bn, _, breaks) in RULES.items()]
    traces = {}
    for label, sync_bn, mistake in variants:
        engine.sync_bn = sync_bn  # the same engine in the other BN mode
        undo = mistake(engine) if mistake else None
        try:
            traces[label] = _trace_replica(engine, name, *trace_args)
        finally:
            if undo:
                undo()
    return traces


_TRACES: dict = {}


def traces(name: str, problem) -> dict[str, Trace]:
    """Every variant's trace for ``name`` on 2 replicas of its engine, from one run of fresh processes."""
    if name not in _TRACES:
        weights, batches, recipe = problem
        _TRACES[name] = parallel.run(name, _all_variants, name, SPEC, weights, batches, recipe, "float64", CHECKPOINTS,
                                     "cpu", devices=DEVICES, sync_bn=False)
    return _TRACES[name]


def reference(sync_bn: bool, problem) -> Trace:
    """PyTorch on one device: the whole batch (``sync_bn``) or each shard on its own."""
    key = ("reference", sync_bn)
    if key not in _TRACES:
        weights, batches, recipe = problem
        _TRACES[key] = trace_training("torch", SPEC, weights, batches, recipe, dtype="float64", record_steps=CHECKPOINTS,
                                      engine=None if sync_bn else PerShard("torch", DEVICES))
    return _TRACES[key]


def worst(trace: Trace, ref: Trace, sync_bn: bool, facts: tuple[str, ...] = ()) -> tuple[float, str]:
    """The largest error of any checked tensor (of ``facts`` only, if given) and its name (the BN variance count:
    per shard unless synced)."""
    checks = check_traces(trace, ref, None, RULE, SPEC, BATCH if sync_bn else BATCH // DEVICES, SIZE)
    check = max((c for c in checks if not facts or fact_of(c.name).split("@")[0] in facts), key=lambda c: c.error)
    return check.error, check.name


@pytest.mark.parametrize("sync_bn", [False, True], ids=["per-replica", "sync"])
@pytest.mark.parametrize("name", NAMES)
def test_distributed_step_matches_one_device(name, sync_bn, problem):
    trace = traces(name, problem)["sync" if sync_bn else "per-replica"]
    error, tensor = worst(trace, reference(sync_bn, problem), sync_bn)
    assert error <= RULE["tolerance"], f"{name} on {DEVICES} replicas: {tensor} off by {error:.1e}"


@pytest.mark.parametrize("sync_bn", [False, True], ids=["per-replica", "sync"])
@pytest.mark.parametrize("name", NAMES)
def test_bn_mode_against_the_other_reference_fails(name, sync_bn, problem):
    # per-replica BN is not the synchronised step, nor the reverse: the check must see which one ran
    trace = traces(name, problem)["sync" if sync_bn else "per-replica"]
    error, tensor = worst(trace, reference(not sync_bn, problem), sync_bn)
    assert error > 1e3 * RULE["tolerance"], f"{tensor}: {error:.1e}"


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("name", NAMES)
def test_each_rule_broken_on_purpose_fails(name, rule, problem):
    sync_bn, facts, _ = RULES[rule]
    trace = traces(name, problem)[rule]
    ref = reference(sync_bn, problem)
    error, tensor = worst(trace, ref, sync_bn, facts)
    assert error > 1e3 * RULE["tolerance"], f"{name}, {rule} broken: {tensor} off by only {error:.1e}"


# --------------------------------------------------------------------------- bad input: one line, exit 2, nothing written


@pytest.mark.parametrize("argv,env,says", [
    (["--devices", "64"], {}, "CPU cores"),
    (["--devices", "2", "--batch-size", "33"], {}, "does not split"),
    (["--devices", "0"], {}, "--devices 0"),
    (["--sync-bn"], {}, "--devices N"),
    (["--devices", "2", "--save-every", "0"], {}, "argument --save-every: 0 is out of range"),
    (["--devices", "2", "--timeout", "0"], {}, "argument --timeout: 0 is out of range"),
    (["--devices", "2"], {"RANK": "0"}, "WORLD_SIZE, MASTER_ADDR, MASTER_PORT missing"),
    (["--devices", "2"], {"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "not below"),
])
def test_train_refuses_bad_input(argv, env, says, tmp_path, monkeypatch, capsys):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    assert main(["train", "--framework", "torch", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not out.exists()


def test_tf_config_half_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["h:1"]}}))
    assert main(["train", "--framework", "tf", "--devices", "2", "--out", str(tmp_path / "run")]) == 2
    assert "TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_compare_devices_needs_training_steps(capsys):
    assert main(["compare", "--arch", "resnet20", "--devices", "2"]) == 2
    assert "--train-steps" in capsys.readouterr().err


def test_shards_are_contiguous_and_cover_the_batch():
    a = np.arange(12)
    assert [parallel.shard(a, r, 3).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]



@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch", "tf", "jax"])
def test_train_command_on_two_replicas_writes_once_and_resumes(name, tmp_path, capfd):
    out = tmp_path / "run"
    common = ["train", "--framework", name, "--devices", "2", "--limit", "64", "--epochs", "2", "--out", str(out)]
    assert main([*common, "--stop-after", "1"]) == 0
    assert main([*common, "--resume"]) == 0
    state = json.loads((out / "state.json").read_text())
    assert (state["epoch"], state["devices"], state["sync_bn"]) == (2, 2, False)
    assert not (out / ".staging").exists()
    # one process printed (the replicas' stderr is this process's file descriptor): one line per epoch
    assert sum("2 replicas epoch" in line for line in capfd.readouterr().err.splitlines()) == 2
