"""Data parallel, framework-free: the checks made before anything starts, the shard plan, and the launcher
that runs a task on N replicas with each framework's own engine (``<package>.parallel.DataParallel``).

One replica is one process in PyTorch (DDP: torchrun's model) and one device of a single process in
TensorFlow (MirroredStrategy) and JAX (a device mesh). The device count of TensorFlow and JAX is a
process-wide setting fixed when the framework first runs, so the launcher always starts fresh processes:
N for PyTorch (one per rank), one for TensorFlow and JAX, which configures its devices first thing. A
process that a multi-process launch started (torchrun; ``TF_CONFIG`` for MultiWorkerMirroredStrategy; the
``JAX_*`` variables for ``jax.distributed``) is already one process of the run and runs the task itself.

Every replica walks the same sequence of global batches (the same seed) and takes its contiguous block of
rows (``shard``): what ``tf.distribute`` and ``NamedSharding(P("data"))`` do, so a global batch is split
the same way in all three frameworks and every example is seen once per epoch across the replicas.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import queue
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import frameworks
from .errors import ReplicaLost, ResNetParityError

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
    variables: str  # where rank and count came from, for messages: "JAX_PROCESS_ID=1, JAX_NUM_PROCESSES=2"
    coordinator: str | None = None  # host:port of process 0, where the others join (None: the launcher did that)
    coordinator_variable: str = ""  # where the address came from, for messages


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
    given = f"{rank_name}={rank}, {world_name}={world}"
    if name == "jax":
        return Launch(rank, world, local, given, os.environ["JAX_COORDINATOR_ADDRESS"], "JAX_COORDINATOR_ADDRESS")
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun: its rendezvous gave every process its rank
        return Launch(rank, world, local, given)
    return Launch(rank, world, local, given, f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                  "MASTER_ADDR:MASTER_PORT")


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
    return Launch(index, len(workers), 1, f"TF_CONFIG task index {index} of {len(workers)} workers", workers[0],
                  "TF_CONFIG's first worker")


def check_replicas(name: str, devices: int, batch: int, device: str = "cpu") -> None:
    """Refuse, before anything starts or is written, a device count this host cannot give, a global batch that
    does not split into equal shards, or one that disagrees with the launch environment (``launch_environment``).
    On CPU the limit is the cores this process may use: logical CPU devices and processes cost nothing to create,
    but replicas beyond the cores only take turns on them."""
    launch = launch_environment(name)
    if devices < 1:
        raise ResNetParityError(f"devices={devices}: must be >= 1")
    if batch % devices:
        raise ResNetParityError(f"devices={devices}: the global batch of {batch} does not split into {devices} equal "
                                f"shards; choose a batch divisible by {devices}")
    if launch is not None:
        # one replica per process for DDP, and for MultiWorkerMirroredStrategy on CPU (a worker's one CPU device)
        one_each = frameworks.FRAMEWORKS[name].replica == "process" or (name == "tf" and device == "cpu")
        if one_each and devices != launch.processes:
            raise ResNetParityError(f"devices={devices}: the launch environment has {launch.processes} processes "
                                    f"({launch.variables}), one replica each; pass the same number")
        if devices % launch.processes:
            raise ResNetParityError(f"devices={devices}: the launch environment has {launch.processes} processes "
                                    f"({launch.variables}); the devices must split evenly over them")
    local = devices if launch is None else devices // launch.processes * launch.local_processes
    if device == "cpu" and local > cpu_cores():
        raise ResNetParityError(f"devices={devices}: {local} CPU replicas on this host, but this process may use "
                                f"{cpu_cores()} CPU cores (os.sched_getaffinity); a replica needs a core of its own")


# --------------------------------------------------------------------------- the roll call of a launch

# How long a process waits for the others: to join (the roll call, then each engine's own start), and in a
# collective (torch's process-group timeout, jax.distributed's initialization and heartbeat timeouts, TF's
# collective timeout): a process that died or hangs stops the others after at most this long.
TIMEOUT_S = 300.0


def roll_call(launch: Launch, devices: int, timeout: float = TIMEOUT_S) -> None:
    """Before an engine starts: every process of a launch checks in with process 0 at the coordinator's address,
    which then hands the port to the engine. Refused in one line, before anything starts: a coordinator that
    cannot be reached within ``timeout`` (the message names the address), a second process with the same rank,
    processes that disagree on the process count or the device count, and processes missing after ``timeout``.

    No engine does all of this itself: jax.distributed and torch's store wait out their timeouts in silence,
    and a second process with a taken rank makes JAX's coordination service stop every process of the run.
    A launch whose launcher assigned the ranks (torchrun) has no coordinator here and skips the roll call.
    """
    if launch.coordinator is None or launch.processes == 1:
        return
    host, port = launch.coordinator.rsplit(":", 1)
    hello = {"rank": launch.rank, "processes": launch.processes, "devices": devices}
    where = f"the coordinator at {launch.coordinator} ({launch.coordinator_variable})"
    deadline = time.monotonic() + timeout
    if launch.rank == 0:
        _host_roll_call(int(port), hello, where, deadline, timeout)
    else:
        _join_roll_call(host.strip("[]"), int(port), hello, where, deadline, timeout, launch)


def _host_roll_call(port: int, hello: dict, where: str, deadline: float, timeout: float) -> None:
    joined: dict[int, tuple[socket.socket, dict]] = {}
    answer: str | None = "process 0 stopped before the run started"
    try:
        try:
            server = socket.create_server(("", port))  # SO_REUSEADDR: the engine binds the port next
        except OSError as exc:
            raise ResNetParityError(f"process 0: cannot listen at {where}: {exc.strerror} (is another process 0 "
                                    "running there?)") from None
        with server:
            while len(joined) < hello["processes"] - 1:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    missing = sorted(set(range(1, hello["processes"])) - set(joined))
                    raise ResNetParityError(f"process 0: processes {', '.join(map(str, missing))} did not reach "
                                            f"{where} within {timeout:g} s") from None
                theirs = _receive(conn, deadline)
                if theirs is None or not isinstance(theirs.get("rank"), int):
                    conn.close()
                elif theirs["rank"] in joined or theirs["rank"] == 0:
                    _send(conn, {"error": f"another process {theirs['rank']} has joined {where} already: two "
                                          "processes claim that rank"})
                    conn.close()
                else:
                    joined[theirs["rank"]] = (conn, theirs)
        disagree = [f"process {r} has {h['processes']} processes and {h['devices']} devices"
                    for r, (_, h) in sorted(joined.items()) if (h["processes"], h["devices"]) != (hello["processes"],
                                                                                                 hello["devices"])]
        if disagree:
            raise ResNetParityError(f"the processes disagree: process 0 has {hello['processes']} processes and "
                                    f"{hello['devices']} devices, {'; '.join(disagree)}")
        answer = None
    except ResNetParityError as exc:
        answer = str(exc)
        raise
    finally:
        for conn, _ in joined.values():
            with contextlib.suppress(OSError):
                _send(conn, {"error": answer})  # what stops process 0 stops the others
        for conn, _ in joined.values():
            _receive(conn, deadline)  # its close: the one who closes first keeps TIME_WAIT, and it must not be here
            conn.close()


def _join_roll_call(host: str, port: int, hello: dict, where: str, deadline: float, timeout: float, launch: Launch
                    ) -> None:
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 0.01))
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise ResNetParityError(f"process {launch.rank}: cannot reach {where} within {timeout:g} s: is process "
                                        "0 running there?") from None
            time.sleep(0.2)
    with conn:
        _send(conn, hello)
        answer = _receive(conn, deadline)
    if answer is None:
        raise ResNetParityError(f"process {launch.rank}: {where} did not answer this process's check-in: a run has "
                                f"started there without it (does another process claim {launch.variables}?)")
    if answer["error"]:
        raise ResNetParityError(f"process {launch.rank}: {answer['error']}")


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _receive(conn: socket.socket, deadline: float) -> dict | None:
    """One JSON line from ``conn``; None when it closes, times out or speaks another protocol."""
    data = b""
    try:
        while not data.endswith(b"\n"):
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = conn.recv(4096)
            data += chunk
            if not chunk or not data.startswith(b"{"):  # closed, or an engine's server answering in its protocol
                return None
        message = json.loads(data)
        return message if isinstance(message, dict) else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- the launcher


def run(name: str, task: Callable[..., Any], *args, devices: int, sync_bn: bool, device: str = "cpu",
        timeout: float = TIMEOUT_S) -> Any:
    """``task(engine, *args)`` on ``devices`` replicas of framework ``name`` (``engine``: its ``DataParallel``);
    returns what the writing process's task returned (None in the other processes of a launch).

    A process started by a multi-process launch (``launch_environment``: torchrun, ``TF_CONFIG``, the ``JAX_*``
    variables) is already one of the run's processes: it runs the task itself, and must not have run the
    framework before (the engine fixes its devices); it first checks in with the others (``roll_call``). Otherwise
    the replicas run in fresh processes started here (``task`` must be importable: a module-level function).
    ``timeout``: how long a process waits for the others (``TIMEOUT_S``).
    """
    if timeout <= 0:
        raise ResNetParityError(f"timeout={timeout:g}: must be > 0 seconds")
    launch = launch_environment(name)
    if launch is not None:
        roll_call(launch, devices, timeout)
        return _replica(name, devices, sync_bn, device, launch.rank, None, timeout, task, args)
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
                                                         timeout, work)) for rank in range(processes)]
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


def _replica(name: str, devices: int, sync_bn: bool, device: str, rank: int, rendezvous: str | None, timeout: float,
             task, args):
    engine = frameworks.load_parallel(name).DataParallel(devices, sync_bn=sync_bn, device=device, rank=rank,
                                                         rendezvous=rendezvous, timeout=timeout)
    try:
        out = task(engine, *args)
    except Exception as exc:
        # no close: leaving the run waits for every process in a barrier, and another one may be gone
        if reason := engine.lost(exc):
            raise ReplicaLost(f"{frameworks.LABELS[name]} process {rank}: the data-parallel run broke off: {reason}") from exc
        raise
    engine.close()
    return out if engine.is_writer else None


def _child(results, name: str, devices: int, sync_bn: bool, device: str, rank: int, rendezvous: str, timeout: float,
           work: str) -> None:
    try:
        with open(work, "rb") as fh:
            task, args = pickle.load(fh)
        out = _replica(name, devices, sync_bn, device, rank, rendezvous, timeout, task, args)
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
                raise ReplicaLost(f"{frameworks.LABELS[name]} replica process {dead[0]} exited with code {code}")
            exited |= {r for r in pending if children[r].exitcode is not None}
            continue
        pending.discard(rank)
        value = pickle.loads(payload)
        if not ok:
            raise value
        if rank == 0:
            out = value
    return out
