"""Data parallel: the distributed step of each framework's own engine against one device, and what it refuses.

The step runs on 2 replicas (2 processes for DDP, 2 logical CPU devices for MirroredStrategy and the JAX
mesh), in fresh processes started by ``shared.parallel``, 3 steps of the parity recipe in float64 on a
narrowed resnet20 (one block per stage, widths 4-8-16) at 8x8, global batch 8: small enough for 2 cores,
deep enough to have BN in the stem, the blocks and a projection-free shortcut. Reference: PyTorch on one
device (cheap, and a second framework, so a check is also across frameworks), with the whole batch for
``sync_bn`` and with each shard normalised on its own (``PerShard``) for per-replica BN. Bound: the float64
training bound of ``shared.parity``.

Deliberate mistakes, each run on a real engine, must fail that check: gradients summed over the replicas
(a DDP communication hook without the division), the loss of each replica divided by its local batch under
Keras's summing optimizer, per-replica BN checked against the synchronised reference (and the reverse).
The default suite runs PyTorch's cases, one Keras case and the bad-input checks (about 45 s on the shared
2 cores); ``-m slow`` runs every framework in both BN modes, the other mistakes (about 2 minutes) and the
train command on 2 replicas with --resume (about 2 minutes).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import parallel
from shared.cli import main
from shared.parity import PARITY_RECIPE, rule_for
from shared.parity.inputs import starting_weights
from shared.parity.training import PerShard, Trace, _trace_replica, check_traces, random_batches, trace_training
from shared.spec import get_spec

SPEC = get_spec("resnet20", layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4)
DEVICES, BATCH, SIZE, STEPS = 2, 8, 8, 3
CHECKPOINTS = (1, STEPS)
RULE = rule_for("float64", "train", None)  # the fixed float64 training bound


@pytest.fixture(scope="module")
def problem():
    _, weights, _, _ = starting_weights(SPEC, None, None, "float64", 0)
    batches = random_batches(SPEC, STEPS, BATCH, SIZE, 1, "float64")
    return weights, batches, PARITY_RECIPE.replace(arch=SPEC.name)


_TRACES: dict = {}


def distributed(name: str, sync_bn: bool, problem, task=_trace_replica) -> Trace:
    """``name``'s trace on 2 replicas of its engine (``task`` may set up a mistake first); computed once."""
    key = (name, sync_bn, task.__name__)
    if key not in _TRACES:
        weights, batches, recipe = problem
        _TRACES[key] = parallel.run(name, task, name, SPEC, weights, batches, recipe, "float64", CHECKPOINTS, "cpu",
                                    devices=DEVICES, sync_bn=sync_bn)
    return _TRACES[key]


def reference(sync_bn: bool, problem) -> Trace:
    """PyTorch on one device: the whole batch (``sync_bn``) or each shard on its own."""
    key = ("reference", sync_bn)
    if key not in _TRACES:
        weights, batches, recipe = problem
        _TRACES[key] = trace_training("torch", SPEC, weights, batches, recipe, dtype="float64", record_steps=CHECKPOINTS,
                                      engine=None if sync_bn else PerShard("torch", DEVICES))
    return _TRACES[key]


def worst(trace: Trace, ref: Trace, sync_bn: bool) -> tuple[float, str]:
    """The largest error of any checked tensor, and its name (the BN variance count: per shard unless synced)."""
    checks = check_traces(trace, ref, None, RULE, SPEC, BATCH if sync_bn else BATCH // DEVICES, SIZE)
    check = max(checks, key=lambda c: c.error)
    return check.error, check.name


CASES = [
    pytest.param("torch", True, id="torch-sync"),
    pytest.param("torch", False, id="torch-per-replica"),
    pytest.param("tf", False, id="tf-per-replica"),
    pytest.param("tf", True, id="tf-sync", marks=pytest.mark.slow),
    pytest.param("jax", True, id="jax-sync", marks=pytest.mark.slow),
    pytest.param("jax", False, id="jax-per-replica", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,sync_bn", CASES)
def test_distributed_step_matches_one_device(name, sync_bn, problem):
    error, tensor = worst(distributed(name, sync_bn, problem), reference(sync_bn, problem), sync_bn)
    assert error <= RULE["tolerance"], f"{name} on {DEVICES} replicas: {tensor} off by {error:.1e}"


@pytest.mark.parametrize("name,sync_bn", [case for case in CASES if case.id in ("torch-sync", "torch-per-replica")])
def test_bn_mode_against_the_other_reference_fails(name, sync_bn, problem):
    # per-replica BN is not the synchronised step, nor the reverse: the check must see which one ran
    error, tensor = worst(distributed(name, sync_bn, problem), reference(not sync_bn, problem), sync_bn)
    assert error > 1e3 * RULE["tolerance"], f"{tensor}: {error:.1e}"


# --------------------------------------------------------------------------- deliberate mistakes, on real engines


def _summed_gradients(state, bucket):
    """A DDP communication hook that all-reduces (sums) the gradients and forgets to divide by the world size."""
    import torch.distributed as dist

    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def torch_gradients_summed(engine, *args) -> Trace:
    build = engine.build_model

    def build_model(*a, **k):
        model = build(*a, **k)
        model.register_comm_hook(None, _summed_gradients)
        return model

    engine.build_model = build_model
    return _trace_replica(engine, *args)


def _local_loss_step(model, optimizer, x, y, recipe):
    """The single-device step under MirroredStrategy: each replica's mean loss over its local batch and the
    whole L2, which Keras's optimizer then sums over the replicas."""
    import tensorflow as tf
    from tensorflow_impl import train

    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = train._loss(logits, y, recipe)
    variables = model.trainable_variables
    grads = train.with_l2(tape.gradient(loss, variables), variables, recipe.optimizer.weight_decay)
    optimizer.apply_gradients(zip(grads, variables))
    return loss, logits


def tf_local_batch_loss(engine, *args) -> Trace:
    from tensorflow_impl import parallel as tf_parallel

    tf_parallel._replica_step = _local_loss_step  # read when the step is traced, in this replica process only
    return _trace_replica(engine, *args)


def jax_gradients_summed(engine, *args) -> Trace:
    import jax
    from jax_impl import parallel as jax_parallel

    # the replicas' losses summed, not averaged: each replica's gradient counted in full
    replica_losses = jax_parallel._replica_losses

    def summed(model, params, x, y, label_smoothing):
        losses, aux = replica_losses(model, params, x, y, label_smoothing)
        return losses * len(jax.devices()), aux

    jax_parallel._replica_losses = summed
    return _trace_replica(engine, *args)


MISTAKES = [
    pytest.param("torch", True, torch_gradients_summed, id="torch-gradients-summed"),
    pytest.param("tf", False, tf_local_batch_loss, id="tf-loss-over-local-batch", marks=pytest.mark.slow),
    pytest.param("jax", False, jax_gradients_summed, id="jax-gradients-summed", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,sync_bn,mistake", MISTAKES)
def test_deliberate_mistake_fails(name, sync_bn, mistake, problem):
    error, tensor = worst(distributed(name, sync_bn, problem, mistake), reference(sync_bn, problem), sync_bn)
    assert error > 1e3 * RULE["tolerance"], f"{mistake.__name__} passed the check: {tensor} off by {error:.1e}"


# --------------------------------------------------------------------------- bad input: one line, exit 2, nothing written


@pytest.mark.parametrize("argv,env,says", [
    (["--devices", "64"], {}, "CPU cores"),
    (["--devices", "2", "--batch-size", "33"], {}, "does not split"),
    (["--devices", "0"], {}, "--devices 0"),
    (["--sync-bn"], {}, "--devices N"),
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
