"""``resnet-parity train``: train in one framework, or in all three in lockstep, from the command line."""

from __future__ import annotations

import argparse
import io
import os
import signal
import struct
import sys
from pathlib import Path

from .. import frameworks, parallel
from ..errors import FrameworkUnavailable, ReplicaLost
from ..datasets import list_datasets
from ..recipe import RECIPES, Recipe, get_recipe
from ..spec import list_specs
from ..parity.lockstep import train_all_frameworks
from ..train import STATE_FILE, fit, fit_data_parallel
from ..checkpoint.destination import write_bytes
from ..version import __version__
from .base import COUNT, EXIT_FAIL, EXIT_OK, SEED, CliError, integer, output_file, real


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framework", help="torch, tf or jax (not with --all-frameworks)")
    parser.add_argument("--recipe", default="digits", choices=list(RECIPES), help="named preset (default: digits, embedded)")
    parser.add_argument("--arch", choices=list_specs(), metavar="NAME", help="preset architecture (default: the recipe's)")
    parser.add_argument("--dataset", choices=list_datasets(), help="default: the recipe's")
    parser.add_argument("--data-dir", help="folder holding the dataset's distribution files")
    parser.add_argument("--image-size", type=COUNT, help="resize images to this side (default: the recipe's)")
    parser.add_argument("--epochs", type=COUNT)
    parser.add_argument("--batch-size", type=COUNT)
    parser.add_argument("--lr", type=real(0, above=True), help="base learning rate")
    parser.add_argument("--schedule", choices=("constant", "step", "cosine"))
    parser.add_argument("--warmup-steps", type=integer(0))
    parser.add_argument("--weight-decay", type=real(0), help="L2 added to the gradient, as torch's SGD")
    parser.add_argument("--label-smoothing", type=real(0, 1, below=True))
    parser.add_argument("--seed", type=SEED, default=0, help="initialisation and data order")
    parser.add_argument("--limit", type=COUNT, help="use only the first N training and N test images")
    parser.add_argument("--out", help="checkpoint folder (default: runs/<framework>-<arch>-<dataset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--force", action="store_true",
                        help="start over in an --out that holds another run or other files (this tool's files there are replaced)")
    parser.add_argument("--save-every", type=COUNT, metavar="STEPS",
                        help="also checkpoint every STEPS steps, not only at the end of each epoch (--resume continues "
                             "from the last one)")
    parser.add_argument("--stop-after", type=COUNT, metavar="EPOCHS", help="train at most this many epochs now; --resume continues")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="train data-parallel on N replicas with the framework's own engine: PyTorch DDP (N processes; "
                             "under torchrun: WORLD_SIZE), Keras MirroredStrategy, a JAX device mesh; on CPU at most one "
                             "per core (default 1)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="with --devices: BatchNorm statistics over the global batch (default: each replica's own; "
                             "running statistics are then replica 0's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                        help="with --devices: the replicas' devices (gpu: NCCL for DDP; not tested here, no GPU)")
    parser.add_argument("--timeout", type=real(0, above=True), default=parallel.TIMEOUT_S, metavar="SECONDS",
                        help="with --devices: how long a process waits for the others (joining, and in each collective) "
                             f"before the run stops with an error (default {parallel.TIMEOUT_S:g})")
    parser.add_argument("--all-frameworks", action="store_true", help="train all installed frameworks in lockstep")
    parser.add_argument("--steps", type=COUNT, default=20, help="steps for --all-frameworks")
    parser.add_argument("--plot", help="PNG of the loss curves for --all-frameworks (default: <out>/loss_curves.png); "
                                       "replaces a plot of this command, any other file needs --force")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The named preset with every option given on the command line applied."""
    names = ("arch", "dataset", "image_size", "epochs", "batch_size", "lr", "schedule", "warmup_steps",
             "weight_decay", "label_smoothing")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    return get_recipe(args.recipe, **overrides)



def format_lockstep(report: dict) -> str:
    """One row per step: each framework's loss, its parameters' drift from the float64 truth, and that drift
    against the limit the reference's own float32 drift sets (shared.parity.rule; <= 1 is within it)."""
    names = list(report["losses"])
    targets = list(report["drift_over_limit"])
    rule = report["rule"]
    head = (f"{'step':>5} " + " ".join(f"{'loss ' + n:>12}" for n in names) + " "
            + " ".join(f"{'drift ' + n:>12}" for n in names) + " " + " ".join(f"{'/limit ' + n:>12}" for n in targets))
    lines = [
        f"{report['arch']} on {report['dataset']}, {report['steps']} steps from {frameworks.LABELS[report['reference']]}'s "
        f"initial weights; drift = max over parameter tensors of the relative error against "
        f"{frameworks.LABELS[report['reference']]} in float64; limit: {rule['description']}",
        head, "-" * len(head),
    ]
    for t in range(report["steps"]):
        lines.append(f"{t + 1:>5} " + " ".join(f"{report['losses'][n][t]:>12.6f}" for n in names) + " "
                     + " ".join(f"{report['parameter_drift'][n][t]:>12.2e}" for n in names) + " "
                     + " ".join(f"{report['drift_over_limit'][n][t]:>12.2f}" for n in targets))
    return "\n".join(lines)


PLOT_TITLE = "resnet-parity train --all-frameworks: loss curves"  # in the PNG's metadata, which marks it as ours


def png_text(path: Path) -> dict[str, str]:
    """The tEXt entries of a PNG file (before its image data); empty for a file that is not a PNG."""
    found = {}
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return found
        while len(header := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                break
            data = f.read(length + 4)[:length]  # and the CRC
            if kind == b"tEXt" and b"\0" in data:
                key, _, value = data.partition(b"\0")
                found[key.decode("latin-1")] = value.decode("latin-1")
    return found


def is_our_plot(path: Path) -> bool:
    """Whether ``path`` is a loss plot this command wrote (which a later run may replace): by its PNG metadata."""
    text = png_text(path)
    return text.get("Title") == PLOT_TITLE and text.get("Software", "").startswith("resnet-parity ")


def plot_losses(report: dict, path: str) -> None:
    """A PNG of each framework's loss curve, marked as ours in its metadata, written whole or not at all."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise FrameworkUnavailable("the loss plot needs matplotlib: pip install 'resnet-parity[data]'") from exc

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (n, losses), style in zip(report["losses"].items(), ("-", "--", ":")):
        ax.plot(range(1, len(losses) + 1), losses, style, label=frameworks.LABELS[n])
    ax.set(xlabel="step", ylabel="training loss", title=f"{report['arch']} on {report['dataset']}: same weights, same batches")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, metadata={"Title": PLOT_TITLE, "Software": f"resnet-parity {__version__}"})
    plt.close(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes(Path(path), png.getvalue())


def _terminated(signum: int, frame) -> None:
    raise ReplicaLost(f"stopped by {signal.Signals(signum).name} (a launcher such as torchrun stops every process of "
                      "a run when one of them fails)")


def broken_off(exc: ReplicaLost, out: str, *, launched: bool) -> int:
    """One line for a data-parallel run that lost a process, saying how to go on; exit code 1."""
    if os.path.isfile(os.path.join(out, STATE_FILE)):
        hint = f"the checkpoint in {out} is whole: the same command with --resume continues from it"
    else:
        hint = "no checkpoint was written yet: run the same command again"
    print(f"resnet-parity train: error: {exc}; {hint}", file=sys.stderr)
    if launched:
        # the engines' exit handlers would wait for the processes that are gone (jax.distributed's shutdown
        # barrier, until its heartbeat timeout and then an abort): this process is done, it leaves now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAIL)
    return EXIT_FAIL


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.all_frameworks:
        if args.framework or args.resume or args.save_every or args.devices is not None or args.sync_bn:
            raise CliError("--all-frameworks trains every installed framework on one device and writes no checkpoint; "
                           "drop --framework, --resume, --save-every, --devices and --sync-bn")
        out = args.out or os.path.join("runs", f"all-{recipe.arch}-{recipe.dataset}")
        plot = args.plot or os.path.join(out, "loss_curves.png")
        output_file(plot, "--plot", inputs={"--data-dir": args.data_dir}, force=args.force,
                    ours=is_our_plot, what="a loss plot of this command", new_directory=True)
        report = train_all_frameworks(recipe, names=frameworks.installed(), steps=args.steps, seed=args.seed,
                                      data_dir=args.data_dir, limit=args.limit)
        print(format_lockstep(report))
        plot_losses(report, plot)
        print(f"loss curves: {plot}")
        return EXIT_OK
    if not args.framework:
        raise CliError("choose --framework torch|tf|jax, or --all-frameworks")
    name = frameworks.canonical_name(args.framework)
    out = args.out or os.path.join("runs", f"{name}-{recipe.arch}-{recipe.dataset}")
    common = dict(data_dir=args.data_dir, out=out, resume=args.resume, force=args.force, seed=args.seed,
                  limit=args.limit, stop_after=args.stop_after, save_every=args.save_every)
    launch = parallel.launch_environment(name)  # torchrun's, TF_CONFIG or the JAX_* variables; half set is an error
    devices = args.devices if args.devices is not None else (launch.processes if launch else 1)
    if devices == 1 and launch is None:
        if args.sync_bn:
            raise CliError("--sync-bn synchronises BatchNorm across replicas; it needs --devices N with N >= 2")
        if args.device != "cpu":
            raise CliError("--device gpu is for data-parallel training (--devices N); one device trains on the CPU")
        state = fit(name, recipe, **common)
    else:
        if launch is not None:
            signal.signal(signal.SIGTERM, _terminated)
        try:
            state = fit_data_parallel(name, recipe, devices=devices, sync_bn=args.sync_bn, device=args.device,
                                      timeout=args.timeout, **common)
        except ReplicaLost as exc:
            if args.debug:
                raise
            return broken_off(exc, out, launched=launch is not None)
    if state and state["history"]:
        last = state["history"][-1]
        print(f"{frameworks.LABELS[name]} {state['arch']}: epoch {state['epoch']}/{recipe.epochs}, "
              f"test accuracy {100 * last['test_accuracy']:.1f}%, checkpoint in {out}")
    return EXIT_OK
