"""Several hosts, as two processes on 127.0.0.1, launched the way each engine's multi-host launch is: torchrun with
two nodes and c10d rendezvous, MultiWorkerMirroredStrategy from ``TF_CONFIG``, ``jax.distributed`` from the
``JAX_*`` variables (``multihost.py``). What runs: ``train`` (default suite: one short epoch per framework), the
distributed-step parity check launched the same way, a process killed mid-epoch and the run resumed (``-m slow``),
and the launches refused before anything starts (one line, exit 2).

Waits are on conditions (a process's exit, a checkpoint on disk), each bounded by a generous limit: the machine
is small and shared.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

import multihost
from shared import frameworks, parallel
from shared.cli import main
from shared.parity import rule_for
from shared.spec import get_spec
from shared.weights import check_weights

NAMES = ["torch", "tf", "jax"]
LIMIT_S = 600  # for one launch to finish on the loaded 2 cores; a run takes 15-60 s
# 32 digits at 8x8 in global batches of 16: two steps, a checkpoint after the first (--save-every 1) and at the end
SHORT = ["--arch", "resnet20", "--image-size", "8", "--limit", "32", "--batch-size", "16", "--epochs", "1"]
SPEC = get_spec("resnet20", in_channels=1, num_classes=10)
ERROR = "resnet-parity train: error: "
TRAINING_STATE_FILES = {"torch": ["model.pth", "optimizer.pth"], "tf": ["model.weights.h5", "optimizer.npz"],
                        "jax": ["model.msgpack", "optimizer.msgpack"]}


def ours(text: str) -> list[str]:
    """The lines this tool printed (the engines and torchrun print their own around them)."""
    return [line for line in text.splitlines() if line.startswith(("resnet-parity", "PyTorch", "Keras/TF", "Flax NNX"))]


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_train_and_process_0_writes(name, tmp_path):
    hosts = multihost.start(name, ["train", "--framework", name, *SHORT, "--devices", "2", "--save-every", "1",
                                   "--out", "run"], tmp_path)
    assert multihost.wait(hosts, LIMIT_S) == [0, 0], "\n".join(h.output() for h in hosts)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert (state["epoch"], state["step"], state["devices"], len(state["history"])) == (1, 0, 2, 1)
    check_weights(SPEC, load_file(str(tmp_path / "run" / "model.safetensors")))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        [*TRAINING_STATE_FILES[name], "model.safetensors", "state.json"])  # no staging left
    # process 0 prints the epoch and the summary; process 1 prints nothing of its own
    label = frameworks.LABELS[name]
    assert [line.split(":")[0] for line in ours(hosts[0].err())] == [f"{label} resnet20 on digits, 2 replicas epoch 1/1"]
    assert [line.split(":")[0] for line in ours(hosts[0].out())] == [f"{label} resnet20"]
    assert ours(hosts[1].out() + hosts[1].err()) == []


# --------------------------------------------------------------------------- the distributed step, launched


PARITY_CASES = [pytest.param(dtype, sync, id=f"{dtype}{'-sync' if sync else ''}")
                for dtype, sync in [("float64", False), ("float64", True), ("float32", False)]]


@pytest.mark.slow
@pytest.mark.parametrize("dtype,sync_bn", PARITY_CASES)
@pytest.mark.parametrize("name", NAMES)
def test_two_processes_step_matches_one_device(name, dtype, sync_bn, tmp_path):
    """``compare --train-steps 2 --devices 2`` launched on two processes: the framework's distributed step against
    itself on one device (float64: the fixed bound; float32: the floor rule)."""
    argv = ["compare", "--arch", "resnet20", "--train-steps", "2", "--devices", "2", "--source", name, "--frameworks",
            name, "--dtype", dtype, "--size", "16", "--json", *(["--sync-bn"] if sync_bn else [])]
    hosts = multihost.start(name, argv, tmp_path)
    codes = multihost.wait(hosts, LIMIT_S)
    out = hosts[0].out()
    report = json.loads(out[out.index("{\n"):])
    assert codes == [0, 0] and report["passed"], "\n".join(h.output() for h in hosts)
    assert (report["extra"]["devices"], report["extra"]["sync_bn"], report["dtype"]) == (2, sync_bn, dtype)
    assert [r["framework"] for r in report["results"]] == [name]
    if dtype == "float64":
        assert report["rule"]["tolerance"] == rule_for("float64", "train", None)["tolerance"]
    assert "{" not in hosts[1].out()  # process 1 reports nothing


# --------------------------------------------------------------------------- a process killed mid-epoch


STEPS_PER_EPOCH = 8


def killed_run_argv(out: str) -> list[str]:
    # 128 digits in global batches of 16: 8 steps an epoch, two epochs, a checkpoint every 3 steps
    return ["--arch", "resnet20", "--image-size", "8", "--limit", "128", "--batch-size", "16", "--epochs", "2",
            "--devices", "2", "--save-every", "3", "--out", out]


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["process-1-killed", "process-0-killed"])
@pytest.mark.parametrize("name", NAMES)
def test_killed_process_costs_only_the_steps_since_the_checkpoint(name, victim, tmp_path):
    """SIGKILL one process mid-epoch: the other stops soon with one line and a non-zero exit, the checkpoint is
    whole, and the same command with --resume ends with the uninterrupted run's weights, bit for bit."""
    train = ["train", "--framework", name]
    whole = multihost.start(name, [*train, *killed_run_argv("run")], tmp_path / "whole")
    assert multihost.wait(whole, LIMIT_S) == [0, 0], "\n".join(h.output() for h in whole)

    folder = tmp_path / "broken"
    hosts = multihost.start(name, [*train, *killed_run_argv("run")], folder)
    multihost.wait_for(lambda: saved_step(folder / "run") >= 3, LIMIT_S, hosts, "the checkpoint at step 3")
    os.kill(hosts[victim].trainer_pid(), signal.SIGKILL)
    killed = time.monotonic()
    codes = multihost.wait(hosts, LIMIT_S)
    stopped_s = time.monotonic() - killed
    survivor = hosts[1 - victim]
    assert all(code != 0 for code in codes), codes
    lines = ours(survivor.out() + survivor.err())
    assert [line for line in lines if line.startswith(ERROR)] == lines[-1:] and "--resume" in lines[-1], \
        survivor.output()
    # the engines notice the closed connections at once; their timeouts (300 s) are the bound for a hung process
    assert stopped_s < 60, f"{stopped_s:.0f} s from the kill to the others' exit"
    saved = json.loads((folder / "run" / "state.json").read_text())
    check_weights(SPEC, load_file(str(folder / "run" / "model.safetensors")))

    resumed = multihost.start(name, [*train, *killed_run_argv("run"), "--resume"], folder)
    assert multihost.wait(resumed, LIMIT_S) == [0, 0], "\n".join(h.output() for h in resumed)
    a, b = load_file(str(tmp_path / "whole" / "run" / "model.safetensors")), load_file(str(folder / "run" / "model.safetensors"))
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"resumed from epoch {saved['epoch'] + 1} step {saved['step']}: {different} differ"
    history = [json.loads((f / "run" / "state.json").read_text())["history"] for f in (tmp_path / "whole", folder)]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]


def saved_step(out) -> int:
    """The global step of the checkpoint in ``out`` (0 before the first)."""
    try:
        state = json.loads((out / "state.json").read_text())
    except (OSError, ValueError):
        return 0
    return state["epoch"] * STEPS_PER_EPOCH + state["step"]


# --------------------------------------------------------------------------- launches refused before anything starts


def launch_env(name: str, rank: int, ports: list[int]) -> dict[str, str]:
    """Process ``rank``'s launch variables for ``len(ports)`` processes; process 0 (the coordinator) at
    127.0.0.1:``ports[0]`` (TensorFlow: worker i at ``ports[i]``)."""
    if name == "torch":
        return {"RANK": str(rank), "WORLD_SIZE": str(len(ports)), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(ports[0])}
    if name == "jax":
        return {"JAX_PROCESS_ID": str(rank), "JAX_NUM_PROCESSES": str(len(ports)),
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{ports[0]}"}
    workers = [f"127.0.0.1:{port}" for port in ports]
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})}


def refused(argv, env: dict, monkeypatch, capsys, tmp_path) -> str:
    """Run ``train`` in this process with a launch environment; it must refuse: exit 2, one line, nothing written."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    assert main(["train", *SHORT, "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(ERROR), err
    assert not out.exists()
    return err


@pytest.mark.parametrize("name", NAMES)
def test_unreachable_coordinator_is_named(name, monkeypatch, capsys, tmp_path):
    port = multihost.free_port()  # nobody listens there
    start = time.monotonic()
    err = refused(["--framework", name, "--timeout", "2"], launch_env(name, 1, [port, port]), monkeypatch, capsys, tmp_path)
    assert f"cannot reach the coordinator at 127.0.0.1:{port}" in err and "within 2 s" in err
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("name,devices,says", [
    ("torch", "4", "2 processes (RANK=1, WORLD_SIZE=2), one replica each"),
    ("tf", "4", "2 processes (TF_CONFIG task index 1 of 2 workers), one replica each"),
    ("jax", "3", "2 processes (JAX_PROCESS_ID=1, JAX_NUM_PROCESSES=2); the devices must split evenly"),
])
def test_process_count_that_disagrees_with_devices(name, devices, says, monkeypatch, capsys, tmp_path):
    err = refused(["--framework", name, "--devices", devices, "--batch-size", "12"], launch_env(name, 1, [multihost.free_port()] * 2),
                  monkeypatch, capsys, tmp_path)
    assert f"--devices {devices}: the launch environment has {says}" in err


class Coordinator(threading.Thread):
    """Process 0's side of the roll call, in a thread: what the refused process meets at the coordinator."""

    def __init__(self, port: int, processes: int):
        super().__init__(daemon=True)
        self.launch = parallel.Launch(0, processes, 1, "the test's", f"127.0.0.1:{port}", "the test's coordinator")
        self.error = None

    def run(self):
        try:
            parallel.roll_call(self.launch, self.launch.processes, timeout=60)
        except Exception as exc:  # what process 0 would print
            self.error = exc


def join_by_hand(port: int, rank: int, processes: int) -> socket.socket:
    """A process that has checked in with the coordinator and waits for its answer."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
    conn.sendall(json.dumps({"rank": rank, "processes": processes, "devices": processes}).encode() + b"\n")
    return conn


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_claiming_one_rank(name, monkeypatch, capsys, tmp_path):
    port = multihost.free_port()
    coordinator = Coordinator(port, 3)
    coordinator.start()
    first, deadline = None, time.monotonic() + 60
    while first is None:  # until process 0 listens
        try:
            first = join_by_hand(port, 1, 3)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "process 0 never listened"
            time.sleep(0.05)
    with first:
        # process 0 takes check-ins in their order: this process 1 comes after the first
        err = refused(["--framework", name, "--devices", "3", "--batch-size", "12"], launch_env(name, 1, [port] * 3), monkeypatch, capsys,
                      tmp_path)
        assert f"process 1: another process 1 has joined the coordinator at 127.0.0.1:{port}" in err
        assert "two processes claim that rank" in err
        with join_by_hand(port, 2, 3) as last:  # the rest of the run checks in and goes on
            assert json.loads(last.makefile().readline()) == {"error": None}
        assert json.loads(first.makefile().readline()) == {"error": None}
    coordinator.join(60)
    assert coordinator.error is None


@pytest.mark.parametrize("name", NAMES)
def test_processes_that_disagree_on_the_count(name, monkeypatch, capsys, tmp_path):
    port = multihost.free_port()
    coordinator = Coordinator(port, 2)  # process 0 was told 2 processes, this one 3
    coordinator.start()
    err = refused(["--framework", name, "--devices", "3", "--batch-size", "12"], launch_env(name, 1, [port] * 3), monkeypatch, capsys, tmp_path)
    assert "the processes disagree: process 0 has 2 processes and 2 devices, process 1 has 3 processes and 3 devices" \
        in err
    coordinator.join(60)
    assert "the processes disagree" in str(coordinator.error)  # process 0 refuses too


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_second_process_with_a_taken_rank_leaves_the_run_alone(name, tmp_path):
    """Three real processes, two of them process 1: the one that comes second is refused (exit 2, one line),
    whether it checks in during the roll call or after the run started; the other two train."""
    ports = [multihost.free_port(), multihost.free_port()]
    argv = [sys.executable, "-m", "shared.cli", "train", "--framework", name, *SHORT, "--devices", "2", "--out", "run"]
    hosts = [multihost.start_one(argv, {"PYTHONPATH": str(multihost.ROOT), **launch_env(name, rank, ports)},
                                 tmp_path, f"process{i}") for i, rank in enumerate([0, 1, 1])]
    codes = multihost.wait(hosts, LIMIT_S)
    assert sorted(codes) == [0, 0, 2], "\n".join(h.output() for h in hosts)
    refused_one = hosts[codes.index(2)]
    lines = ours(refused_one.err())
    assert len(lines) == 1 and lines[0].startswith(ERROR) and "process 1" in lines[0], refused_one.output()
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 1
