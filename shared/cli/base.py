"""What every subcommand shares: exit codes, the command line's own errors in one line, numeric flags with their
bounds, library messages in its words, and the one guard on every file a command writes."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Callable, Mapping

from ..checkpoint.destination import check_destination
from ..errors import CheckpointError, CliError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3  # 3: a bug of ours, not the input

# The widest integer every framework takes for a count or a seed (int64 step counters; uint32 seeds for JAX's keys)
INT64_MAX, SEED_MAX = 2**63 - 1, 2**32 - 1


class UsageError(CliError):
    """A command line argparse refuses; ``prog`` is the (sub)command that refused it."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``main`` prints it, as JSON too with --json), not usage and exit."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


def integer(low: int, high: int = INT64_MAX) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {_range(low, high)}")
        return value

    parse.kind = "int"  # the fuzz test walks the flags by kind
    return parse


def real(low: float, high: float = math.inf, *, above: bool = False, below: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from ``low`` to ``high`` (``above``/``below``: the bound itself excluded)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = (value > low if above else value >= low) and (value < high if below else value <= high)
        if not math.isfinite(value) or not inside:
            lower, upper = f"{'>' if above else '>='} {low:g}", f"{'<' if below else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: a finite number {lower}"
                                             + ("" if math.isinf(high) else f" and {upper}"))
        return value

    parse.kind = "float"
    return parse


def _range(low: int, high: int) -> str:
    def show(n: int) -> str:
        return {INT64_MAX: "2**63 - 1", SEED_MAX: "2**32 - 1"}.get(n, str(n))

    return f"a whole number from {show(low)} to {show(high)}"


COUNT = integer(1)  # sizes, batches, steps, epochs: at least one
SEED = integer(0, SEED_MAX)


# The library names the keyword argument that would fix a problem (``force=True``); the command line's word for it.
FLAGS = {
    "force": "--force", "arch": "--arch", "fmt": "--from", "src_format": "--from", "dst_format": "--to",
    "allow_nonfinite": "--allow-nonfinite", "keep_dtype": "--keep-dtype", "verify_output": "--no-verify",
    "limit": "--limit", "steps": "--steps", "resume": "--resume", "lr": "--lr", "size": "--size", "batch": "--batch",
    "devices": "--devices", "sync_bn": "--sync-bn", "out": "--out", "save_every": "--save-every",
    "timeout": "--timeout", "strip_prefix": "--strip-prefix", "drop_unexpected": "--drop-unexpected",
    "image": "--image", "weights_format": "--from",
}
_KEYWORD = re.compile(r"\b(" + "|".join(FLAGS) + r")=([^\s,;:)]*)")


def flags(text: str) -> str:
    """A library message in command-line words: 'pass force=True' -> 'pass --force', 'arch=NAME' -> '--arch NAME'."""
    def flag(m: re.Match) -> str:
        value = m[2]
        return FLAGS[m[1]] if value in ("True", "False", "") else f"{FLAGS[m[1]]} {value}"

    return _KEYWORD.sub(flag, text)


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """--strip-prefix and --drop-unexpected: for the checkpoints people hold (``shared.checkpoint.keys``)."""
    parser.add_argument("--strip-prefix", metavar="P",
                        help="remove the prefix P from the keys that carry it (a prefix every key carries, such as "
                             "module. or backbone., goes without asking)")
    parser.add_argument("--drop-unexpected", action="store_true",
                        help="drop the keys the architecture has no place for (an extra head), listed in the report, "
                             "instead of refusing the file")


def output_file(path: str, flag: str, *, inputs: Mapping[str, str | None], force: bool,
                ours: Callable[[Path], bool], what: str, new_directory: bool = False) -> Path:
    """The one guard on a file a command writes (``flag``, e.g. '--junit'), before any work: refused where it is one
    of the command's ``inputs`` (flag -> path) even with --force, a directory, in a directory that does not exist
    (unless the command makes it: ``new_directory``), or an existing file that ``ours`` does not recognise as
    ``what`` this tool wrote, unless --force. Checkpoints have the same guard in ``shared.checkpoint.Destination``."""
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{flag} {path}: is a directory")
    if not new_directory and not target.parent.is_dir():
        raise CliError(f"{flag} {path}: directory {target.parent} does not exist")
    try:
        check_destination(target, force=force, inputs=inputs, ours=ours, what=what)
    except CheckpointError as exc:
        raise CliError(f"{flag} {flags(str(exc))}") from None
    return target
