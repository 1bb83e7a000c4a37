"""Data parallel, framework-free: the checks made before anything starts, the shard plan, and the launcher
that runs a task on N replicas with each framework's own engine (``<package>.parallel.DataParallel``).

One replica is one process in PyTorch (DDP: torchrun's model) and one device of a single process in
TensorFlow (MirroredStrategy) and JAX (a device mesh). The device count of TensorFlow and JAX is a
process-wide setting fixed when the framework first runs, so the launcher always starts fresh processes:
N for PyTorch (one per rank), one for TensorFlow and JAX, which configures its devices first thing. A
process that torchrun started is already a rank and runs the task itself.

Every replica walks the same sequence of global batches (the same seed) and takes its contiguous block of
rows (``shard``): what ``tf.distribute`` and ``NamedSharding(P("data"))`` do, so a global batch is split
the same way in all three frameworks and every example is seen once per epoch across the replicas.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import queue
import tempfile
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import frameworks
from .errors import ResNetParityError

# What a multi-process launch sets per framework, the process index and count first; any one of them present
# means "launched", and then all must be. torchrun sets PyTorch's; TensorFlow reads TF_CONFIG (checked apart);
# JAX's are jax.distributed.initialize's arguments, which it detects by itself only under a cluster manager.
LAUNCH_VARIABLES = {
    "torch": ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"),
    "jax": ("JAX_PROCESS_ID", "JAX_NUM_PROCESSES", "JAX_COORDINATOR_ADDRESS"),
}


@dataclass(frozen=True)
class Launch:
    """A run started by a multi-process launcher: this process's index among ``processes``."""

    rank: int
    processes: int
    local_processes: int  # on this host


def shard(a: np.ndarray, rank: int, replicas: int) -> np.ndarray:
    """Replica ``rank``'s contiguous block of rows of a global batch (equal blocks; the batch divides)."""
    n = len(a) // replicas
    return a[rank * n:(rank + 1) * n]


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ResNetParityError(f"half-set-up launch environment: {name}={value!r} is not an integer") from None


def launch_environment(name: str) -> Launch | None:
    """The launch this process is part of, from the framework's variables; None when started by hand.
    Variables set only in part, or inconsistent, are a ResNetParityError naming what is missing."""
    if name == "tf":
        return _tf_config()
    variables = LAUNCH_VARIABLES.get(name, ())
    present = [v for v in variables if v in os.environ]
    if not present:
        return None
    if len(present) < len(variables):
        missing = [v for v in variables if v not in os.environ]
        raise ResNetParityError(f"half-set-up launch environment: {', '.join(present)} set but {', '.join(missing)} "
                                "missing; set all of them (torchrun does) or none")
    rank_name, world_name = variables[:2]
    rank, world = _int(rank_name, os.environ[rank_name]), _int(world_name, os.environ[world_name])
    if not 0 <= rank < world:
        raise ResNetParityError(f"half-set-up launch environment: {rank_name}={rank} is not below {world_name}={world}")
    local = _int("LOCAL_WORLD_SIZE", os.environ["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in os.environ else 1
    return Launch(rank, world, local)


def _tf_config() -> Launch | None:
    if "TF_CONFIG" not in os.environ:
        return None
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        workers, task = config["cluster"]["worker"], config["task"]
        index = int(task["index"])
        if task["type"] != "worker" or not 0 <= index < len(workers):
            raise ValueError(f"task {task} is not one of the {len(workers)} workers")
    except (ValueError, KeyError, TypeError) as exc:
        raise ResNetParityError(f"half-set-up launch environment: TF_CONFIG needs cluster.worker (a list of host:port) "
                                f"and task {{type: worker, index}}: {exc}") from None
    return Launch(index, len(workers), 1)


def check_replicas(name: str, devices: int, batch: int, device: str = "cpu", launch: Launch | None = None) -> None:
    """Refuse, before anything starts or is written, a device count this host cannot give or a global batch
    that does not split into equal shards. On CPU the limit is the cores this process may use: logical CPU
    devices and processes cost nothing to create, but replicas beyond the cores only take turns on them."""
    if devices < 1:
        raise ResNetParityError(f"devices={devices}: must be >= 1")
    if batch % devices:
        raise ResNetParityError(f"devices={devices}: the global batch of {batch} does not split into {devices} equal "
                                f"shards; choose a batch divisible by {devices}")
    if launch is not None and devices % launch.processes:
        raise ResNetParityError(f"devices={devices}: the launch has {launch.processes} processes; the devices must "
                                "split evenly over them")
    local = devices if launch is None else devices // launch.processes * launch.local_processes
    if device == "cpu" and local > cpu_cores():
        raise ResNetParityError(f"devices={devices}: {local} CPU replicas on this host, but this process may use "
                                f"{cpu_cores()} CPU cores (os.sched_getaffinity); a replica needs a core of its own")
    if name == "torch" and launch is not None and launch.processes != devices:
        raise ResNetParityError(f"devices={devices}: the launch environment has WORLD_SIZE={launch.processes} "
                                "processes, one per replica; pass the same number")


# --------------------------------------------------------------------------- the launcher


def run(name: str, task: Callable[..., Any], *args, devices: int, sync_bn: bool, device: str = "cpu",
        launch: Launch | None = None) -> Any:
    """``task(engine, *args)`` on ``devices`` replicas of framework ``name`` (``engine``: its ``DataParallel``);
    returns what the writing process's task returned (None in the other processes of a launch).

    ``launch``: this PyTorch process is one rank of a torchrun launch; it runs the task itself. Otherwise the
    replicas run in fresh processes started here (``task`` must be importable: a module-level function).
    """
    if launch is not None and frameworks.FRAMEWORKS[name].replica == "process":
        return _replica(name, devices, sync_bn, device, launch.rank, None, task, args)
    processes = devices if frameworks.FRAMEWORKS[name].replica == "process" else 1
    context = multiprocessing.get_context("spawn")  # never fork a process whose framework threads already run
    results = context.Queue()
    with tempfile.TemporaryDirectory(prefix="resnet-parity-") as folder:
        rendezvous = f"file://{os.path.join(folder, 'rendezvous')}"  # no port to pick on one host
        # the task and its arguments (weights, batches) go through a file: Process.start writes what it passes
        # into a pipe and keeps the reading end open until done, so a child that dies before reading a payload
        # larger than the pipe's buffer would leave start() blocked for ever
        work = os.path.join(folder, "task.pickle")
        with open(work, "wb") as fh:
            pickle.dump((task, args), fh)
        children = [context.Process(target=_child, args=(results, name, devices, sync_bn, device, rank, rendezvous,
                                                         work)) for rank in range(processes)]
        try:
            for child in children:
                child.start()
            return _collect(results, children, name)
        finally:
            for child in children:
                if child.is_alive():
                    child.terminate()
                if child.pid is not None:  # started
                    child.join()


def _replica(name: str, devices: int, sync_bn: bool, device: str, rank: int, rendezvous: str | None, task, args):
    engine = frameworks.load_parallel(name).DataParallel(devices, sync_bn=sync_bn, device=device, rank=rank,
                                                         rendezvous=rendezvous)
    try:
        out = task(engine, *args)
        return out if engine.is_writer else None
    finally:
        engine.close()


def _child(results, name: str, devices: int, sync_bn: bool, device: str, rank: int, rendezvous: str, work: str) -> None:
    try:
        with open(work, "rb") as fh:
            task, args = pickle.load(fh)
        out = _replica(name, devices, sync_bn, device, rank, rendezvous, task, args)
        results.put((rank, True, pickle.dumps(out)))
    except BaseException as exc:  # the parent re-raises it; a traceback here would break the one-line error
        results.put((rank, False, pickle.dumps(_portable(exc))))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling as itself, else an equivalent of the same family; the child's traceback
    becomes a note (shown by ``--debug``)."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is not type(exc) or str(copy) != str(exc):
            raise TypeError
    except Exception:
        copy = (ResNetParityError if isinstance(exc, ResNetParityError) else RuntimeError)(
            f"{type(exc).__name__}: {exc}")
    copy.add_note("in the replica process:\n" + "".join(traceback.format_exception(exc)))
    return copy


def _collect(results, children: list, name: str):
    """What process 0 returned, once every process has reported; the first error any of them raised."""
    pending, out, exited = set(range(len(children))), None, set()
    while pending:
        try:
            rank, ok, payload = results.get(timeout=1.0)
        except queue.Empty:
            # a process that exited had flushed what it put; one that exited without reporting died
            dead = [r for r in pending if r in exited]
            if dead:
                code = children[dead[0]].exitcode
                raise RuntimeError(f"{frameworks.LABELS[name]} replica process {dead[0]} exited with code {code}")
            exited |= {r for r in pending if children[r].exitcode is not None}
            continue
        pending.discard(rank)
        value = pickle.loads(payload)
        if not ok:
            raise value
        if rank == 0:
            out = value
    return out
