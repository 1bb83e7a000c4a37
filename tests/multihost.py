"""Two "hosts" on 127.0.0.1: the command line launched as two processes the way each engine's multi-host
launch does it (torchrun with two nodes and c10d rendezvous, ``TF_CONFIG`` for MultiWorkerMirroredStrategy,
the ``JAX_*`` variables for ``jax.distributed``), on ports picked free at run time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick for port 0; another program may take it before we do)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_commands(name: str, argv: list[str], processes: int = 2) -> list[tuple[list[str], dict[str, str]]]:
    """(command, extra environment) of each process: ``resnet-parity ARGV`` as process i of ``processes`` hosts."""
    cli = [sys.executable, "-m", "shared.cli", *argv]
    if name == "torch":
        port = free_port()
        # torchrun, with this interpreter (python -m torch.distributed.run is the torchrun script)
        rdzv = ["--nnodes", str(processes), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0"]
        return [([sys.executable, "-m", "torch.distributed.run", *rdzv, "-m", "shared.cli", *argv], {})
                for _ in range(processes)]
    if name == "tf":
        workers = [f"127.0.0.1:{free_port()}" for _ in range(processes)]
        return [(cli, {"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})})
                for i in range(processes)]
    address = f"127.0.0.1:{free_port()}"
    return [(cli, {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(i)})
            for i in range(processes)]


@dataclass
class Host:
    """One launched process (for torch: the torchrun agent, whose one worker trains) and its output files."""

    process: subprocess.Popen
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout of pid {self.process.pid}\n{self.out()[-3000:]}\n--- stderr\n{self.err()[-3000:]}"

    def trainer_pid(self) -> int:
        """The process that trains: torchrun's worker, else the launched process itself."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        kids = children.read_text().split() if children.exists() else []
        return int(kids[0]) if kids else self.process.pid


def start(name: str, argv: list[str], cwd: Path, processes: int = 2) -> list[Host]:
    """Start the processes of one launch in ``cwd``, process i writing to ``cwd/host<i>.out`` and ``.err``."""
    return [start_one(command, {**extra, "PYTHONPATH": str(ROOT)}, cwd, f"host{i}")
            for i, (command, extra) in enumerate(launch_commands(name, argv, processes))]


def start_one(command: list[str], env: dict[str, str], cwd: Path, label: str) -> Host:
    """One process with ``env`` added to ours, in its own session (so that ``stop`` reaches its children)."""
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = cwd / f"{label}.out", cwd / f"{label}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=fo, stderr=fe,
                                   start_new_session=True)
    return Host(process, out, err)


def wait(hosts: list[Host], timeout: float) -> list[int]:
    """Every process's exit code; those still running after ``timeout`` seconds are killed and fail the caller."""
    deadline = time.monotonic() + timeout
    codes = []
    for host in hosts:
        try:
            codes.append(host.process.wait(max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            stop(hosts)
            raise AssertionError(f"still running after {timeout:.0f} s:\n" + "\n".join(h.output() for h in hosts))
    return codes


def stop(hosts: list[Host]) -> None:
    """Kill every process this launch started (each its own session: torchrun's worker goes with its agent)."""
    for host in hosts:
        if host.process.poll() is None:
            os.killpg(host.process.pid, signal.SIGKILL)
        host.process.wait()


def wait_for(condition, timeout: float, hosts: list[Host], what: str) -> None:
    """Poll ``condition()`` until it holds; fail (and stop the launch) after ``timeout`` or if a process exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or any(h.process.poll() is not None for h in hosts):
            stop(hosts)
            raise AssertionError(f"never saw {what}:\n" + "\n".join(h.output() for h in hosts))
        time.sleep(0.05)
