"""What a killed process costs a two-process run, per engine: the others' time to stop, the steps lost, and the
resumed run against an uninterrupted one.

    PYTHONPATH=tests python benchmarks/kill_and_resume.py [--frameworks torch tf jax] [--victims 1 0] [--save-every 3]

Each engine's multi-host launch on 127.0.0.1 (``tests/multihost.py``: torchrun with two nodes, ``TF_CONFIG``,
``jax.distributed``), resnet20 on 128 digits at 8x8, global batch 16 (8 steps an epoch), two epochs, a checkpoint
every ``--save-every`` steps. An uninterrupted run; then the same run, SIGKILL of one process at a random moment
after its first checkpoint (within ``--save-every`` steps of it, at the uninterrupted run's step time), and the
same command with ``--resume``. Process 0's progress bar (on a pseudo-terminal) shows how many steps the run had
done when the kill came; the checkpoint says where the resumed run starts: the difference is the steps lost.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import random
import re
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import multihost  # tests/multihost.py: the launches the tests use

BATCH, STEPS_PER_EPOCH = 16, 8


def argv(name: str, save_every: int, *extra: str) -> list[str]:
    return ["train", "--framework", name, "--arch", "resnet20", "--image-size", "8", "--limit", "128", "--batch-size",
            str(BATCH), "--epochs", "2", "--devices", "2", "--save-every", str(save_every), "--out", "run", *extra]


def saved(folder: Path) -> tuple[int, int]:
    try:
        state = json.loads((folder / "run" / "state.json").read_text())
    except (OSError, ValueError):
        return -1, 0
    return state["epoch"], state["step"]


def start_with_terminal(name: str, args: list[str], cwd: Path) -> tuple[list[multihost.Host], list[str]]:
    """The launch, process 0's stderr on a pseudo-terminal (its progress bar draws only there), whose text is
    collected in the returned list as it comes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # a new pty is 0 wide: tqdm draws nothing
    commands = multihost.launch_commands(name, args)
    hosts, seen = [], []
    cwd.mkdir(parents=True, exist_ok=True)
    for i, (command, extra) in enumerate(commands):
        env = {**os.environ, **extra, "PYTHONPATH": str(multihost.ROOT)}
        with open(cwd / f"host{i}.out", "w") as out, open(cwd / f"host{i}.err", "w") as err:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=slave if i == 0 else err,
                                       start_new_session=True)
        hosts.append(multihost.Host(process, cwd / f"host{i}.out", cwd / f"host{i}.err"))
    os.close(slave)

    def read():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.append(chunk.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return hosts, seen


def steps_shown(seen: list[str]) -> int:
    """The last step count process 0's bar showed: images done / batch, plus the epochs before."""
    text = "".join(seen)
    bars = re.findall(r"epoch (\d+)/\d+:\s+\d+%\|[^|]*\| (\d+)/\d+ ", text)
    if not bars:
        return 0
    epoch, images = bars[-1]
    return (int(epoch) - 1) * STEPS_PER_EPOCH + int(images) // BATCH


def one(name: str, victim: int, save_every: int, folder: Path, rng: random.Random) -> dict:
    whole = multihost.start(name, argv(name, save_every), folder / "whole")
    assert multihost.wait(whole, 900) == [0, 0], "\n".join(h.output() for h in whole)
    broken = folder / "broken"
    hosts, seen = start_with_terminal(name, argv(name, save_every), broken)
    step_s = json.loads((folder / "whole" / "run" / "state.json").read_text())["history"][1]["seconds"] / STEPS_PER_EPOCH
    multihost.wait_for(lambda: saved(broken)[1] >= save_every, 900, hosts, "the first checkpoint")
    time.sleep(rng.uniform(0, save_every * step_s))  # before the next checkpoint, at a step time of the whole run
    done = steps_shown(seen)
    os.kill(hosts[victim].trainer_pid(), signal.SIGKILL)
    killed = time.monotonic()
    codes = [h.process.wait(900) for h in hosts]
    stopped = time.monotonic() - killed
    epoch, step = saved(broken)
    checkpoint = epoch * STEPS_PER_EPOCH + step
    survivor = hosts[1 - victim]
    text = survivor.err() + "".join(seen) if victim == 1 else survivor.err()
    said = re.findall(r"resnet-parity train: error[^\r\n]*", text)
    resumed = multihost.start(name, argv(name, save_every, "--resume"), broken)
    assert multihost.wait(resumed, 900) == [0, 0], "\n".join(h.output() for h in resumed)
    a = load_file(str(folder / "whole" / "run" / "model.safetensors"))
    b = load_file(str(broken / "run" / "model.safetensors"))
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    return {"framework": name, "victim": victim, "exit_codes": codes, "stopped_s": round(stopped, 2),
            "steps_done_at_kill": max(done, checkpoint), "checkpoint_step": checkpoint,
            "steps_lost": max(done - checkpoint, 0), "tensors_differing": sum(not np.array_equal(a[k], b[k]) for k in a),
            "max_abs_difference": worst, "survivor_said": said[-1] if said else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=["torch", "tf", "jax"])
    parser.add_argument("--victims", nargs="+", type=int, default=[1, 0])
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.frameworks:
            for victim in args.victims:
                row = one(name, victim, args.save_every, Path(tmp) / f"{name}-{victim}", rng)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| engine | process killed | kill -> others' exit | steps done / checkpoint / lost | resumed vs uninterrupted |")
    print("|---|---|---|---|---|")
    for r in rows:
        same = "bit for bit" if not r["tensors_differing"] else f"{r['tensors_differing']} tensors, max {r['max_abs_difference']:.1e}"
        print(f"| {r['framework']} | {r['victim']} | {r['stopped_s']:.1f} s | {r['steps_done_at_kill']} / "
              f"{r['checkpoint_step']} / {r['steps_lost']} | {same} |")


if __name__ == "__main__":
    main()
